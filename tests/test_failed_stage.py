"""`dvc repro` never loses what you had: a stage that fails leaves every previous output in place,
byte for byte (dvc.yaml's `persist: true` and the stages' atomic writes)."""
import hashlib

import pytest

from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow

STAGES = ["download", "build_vocab", "make_tfrecords", "train", "evaluate_perplexity", "sample"]


def outputs(root) -> dict[str, str]:
    """Every file under data/ (the download cache aside) and metrics/, by content hash."""
    found = [p for folder in ("data", "metrics") for p in (root / folder).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in found if "data/cache" not in p.as_posix()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("failing"), shakespeare_like(20_000))
    p.dvc("repro")
    p.before = outputs(p.root)
    assert "data/model/model.weights.h5" in p.before and "metrics/train.json" in p.before
    p.git("add", "-A")
    p.git("commit", "-qm", "outputs")
    return p


@pytest.mark.parametrize("stage", STAGES)
def test_a_typo_in_params_keeps_the_outputs(project, stage):
    good = project.read("params.yaml")
    project.set_params({"train": {"units": "512x"}})  # every stage reads params first
    try:
        failed = project.dvc("repro", "--force", "-s", stage, check=False)
    finally:
        (project.root / "params.yaml").write_text(good, encoding="utf-8")
    assert failed.returncode != 0
    assert "error: " in failed.stderr and "Traceback" not in failed.stderr
    assert outputs(project.root) == project.before


def test_a_failing_download_keeps_the_corpus_and_a_fixed_one_is_a_no_op(project):
    good = project.read("params.yaml")
    project.set_params({"data": {"source": "no-such-corpus.txt"}})
    try:
        failed = project.dvc("repro", check=False)
    finally:
        (project.root / "params.yaml").write_text(good, encoding="utf-8")
    assert failed.returncode != 0 and "no-such-corpus.txt" in failed.stderr
    assert outputs(project.root) == project.before
    assert "Running stage" not in project.dvc("repro").stdout  # nothing lost, nothing to redo
