"""A local corpus is a real DVC dependency: a file under corpora/ re-runs `download` when its content
changes; one elsewhere is warned about, and one that a queued/--temp copy lacks is refused with the fix."""
import json
import subprocess
import sys

import pytest

from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path):
    p = make_project(tmp_path / "p", shakespeare_like(5_000), {"data": {"source": "corpora/novel.txt"}})
    (p.root / "corpora" / "novel.txt").write_text("ROMEO:\nFirst words.\n", encoding="utf-8")
    p.git("add", "-A")
    p.git("commit", "-qm", "a local corpus")
    return p


def test_editing_a_corpus_in_corpora_reruns_download(project):
    first = project.dvc("repro", "download")
    assert "Running stage 'download'" in first.stdout and "warning" not in first.stderr
    assert "up to date" in project.dvc("status", "download").stdout
    (project.root / "corpora" / "novel.txt").write_text("ROMEO:\nOther words.\n", encoding="utf-8")
    assert "changed deps" in project.dvc("status", "download").stdout
    assert "Running stage 'download'" in project.dvc("repro", "download").stdout
    assert project.read("data/raw/corpus.txt") == "ROMEO:\nOther words.\n"


def test_a_corpus_outside_corpora_is_warned_about(project):
    project.set_params({"data": {"source": "corpus-src.txt"}})
    ran = project.dvc("repro", "download")
    assert "warning: data.source 'corpus-src.txt' is outside corpora/: DVC does not see when it changes" in ran.stderr


def test_a_file_the_experiment_copy_lacks_is_refused_with_the_fix(project, tmp_path):
    """As in a queued or --temp experiment: DVC_ROOT is the real workspace, the cwd a copy without
    the untracked file."""
    workspace = tmp_path / "workspace"
    (workspace / "corpora").mkdir(parents=True)
    (workspace / "corpora" / "untracked.txt").write_text("text", encoding="utf-8")
    project.set_params({"data": {"source": "corpora/untracked.txt"}})
    failed = subprocess.run([sys.executable, "stages/download.py"], cwd=project.root, capture_output=True,
                            text=True, env={**project.env, "DVC_ROOT": str(workspace)})
    assert failed.returncode == 1
    assert ("error: data.source 'corpora/untracked.txt' is in your workspace but not in this experiment's copy"
            in failed.stderr)
    assert "`git add` it, or `dvc add` it" in failed.stderr


def test_a_folder_in_corpora_reruns_download_when_any_file_in_it_changes_and_lists_its_documents(project):
    (project.root / "corpora" / "novels").mkdir()
    (project.root / "corpora" / "novels" / "b.txt").write_text("JULIET:\nSecond.\n", encoding="utf-8")
    (project.root / "corpora" / "novels" / "a.txt").write_text("ROMEO:\nFirst.\n", encoding="utf-8")
    project.set_params({"data": {"source": "corpora/novels"}})
    first = project.dvc("repro", "build_vocab")
    assert "Running stage 'download'" in first.stdout and "warning" not in first.stderr
    assert project.read("data/raw/corpus.txt") == "ROMEO:\nFirst.\n\nJULIET:\nSecond.\n"
    listed = json.loads(project.read("metrics/vocab.json"))["documents"]
    assert [d["name"] for d in listed] == ["corpora/novels/a.txt", "corpora/novels/b.txt"]
    assert "up to date" in project.dvc("status", "download").stdout
    assert project.dvc("metrics", "show", "metrics/vocab.json").returncode == 0
    (project.root / "corpora" / "novels" / "c.txt").write_text("NURSE:\nThird.\n", encoding="utf-8")
    assert "changed deps" in project.dvc("status", "download").stdout
    assert "Running stage 'download'" in project.dvc("repro", "download").stdout
    assert project.read("data/raw/corpus.txt").endswith("\nNURSE:\nThird.\n")
    assert "Stage 'download' didn't change" in project.dvc("repro", "download").stdout  # and not otherwise


def test_the_whole_pipeline_trains_on_a_folder_and_holds_out_the_tail_of_each_document(project):
    from charrnn.data.split import Split

    novels = project.root / "corpora" / "novels"
    novels.mkdir()
    for seed, name in enumerate(["a.txt", "b.txt"]):
        (novels / name).write_text(shakespeare_like(3_000, seed=seed + 1), encoding="utf-8")
    project.set_params({"data": {"source": "corpora/novels"}})
    project.dvc("repro")
    split = Split.of(project.root / "data/raw/corpus.txt", 0.1)
    assert len(split.parts) == 2 and all(lo < cut < hi for lo, cut, hi in split.parts)
    held_out = "".join(split.held_out)
    for name in ("a.txt", "b.txt"):  # each document's last tenth is in the held-out text
        text = (novels / name).read_text(encoding="utf-8")
        assert text[-len(text) // 10 + 5:] in held_out
    loss = json.loads(project.read("metrics/perplexity.json"))["loss"]
    assert 0 < loss < 5
    assert sorted(p.name for p in (project.root / "data/samples").glob("*.txt"))
