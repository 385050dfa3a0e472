"""End to end: the real DVC pipeline on generated corpora, in a throw-away copy of the project."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One full `dvc repro` with MLflow tracking on, shared by the tests below (in order)."""
    p = make_project(tmp_path_factory.mktemp("pipeline"), shakespeare_like(40_000), tracking=True)
    p.repro = p.dvc("repro")
    return p


def test_repro_produces_every_output(project):
    out = project.repro.stdout
    for stage in ["download", "build_vocab", "make_tfrecords", "train", "sample", "evaluate_perplexity"]:
        assert f"Running stage '{stage}'" in out
    root = project.root
    assert (root / "data/raw/corpus.txt").read_text(encoding="utf-8").startswith(
        (root / "corpus-src.txt").read_text(encoding="utf-8")[:100])
    assert json.loads(project.read("metrics/vocab.json"))["unk_rate"] == 0.0
    records = json.loads(project.read("metrics/records.json"))
    assert records["train_chars"] == 36_000 and records["val_chars"] == 4_000
    history = pd.read_csv(root / "metrics/history.csv")
    assert list(history.columns) == ["epoch", "loss", "val_loss"] and len(history) == 2
    assert list(pd.read_csv(root / "metrics/throughput.csv").columns) == ["epoch", "seconds", "chars_per_sec"]
    held_out = json.loads(project.read("metrics/perplexity.json"))
    assert held_out["chars"] == 3_999 and held_out["loss"] < 3.0
    assert held_out["bpc"] == pytest.approx(held_out["loss"] / 0.6931471805599453)
    samples = sorted((root / "data/samples").glob("*.txt"))
    assert [s.read_text(encoding="utf-8")[:6] for s in samples] == ["ROMEO:", "JULIET"]
    assert all(len(s.read_text(encoding="utf-8")) == len(p) + 40 + 1
               for s, p in zip(samples, ["ROMEO:", "JULIET:"]))
    assert "[UNK]" not in "".join(s.read_text(encoding="utf-8") for s in samples)
    assert not list(root.rglob(".*.tmp"))  # no temporaries left behind


def test_exported_generator_runs_without_the_package(project):
    code = (
        "import sys, tensorflow as tf\n"
        "sys.path = [p for p in sys.path if 'src' not in p]\n"
        "g = tf.saved_model.load('data/generator')\n"
        "out = g.generate(tf.constant(['ROMEO:', 'NURSE:']), tf.constant(25), tf.constant(0.8), tf.constant(3, tf.int64))\n"
        "import json; print(json.dumps([s.decode() for s in out.numpy()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True,
                         env={**project.env, "PYTHONPATH": ""}, check=True).stdout
    first, second = json.loads(out.strip().splitlines()[-1])  # the texts may end in whitespace
    assert first.startswith("ROMEO:") and len(first) == 6 + 25
    assert second.startswith("NURSE:") and len(second) == 6 + 25


def test_second_repro_is_a_no_op(project):
    out = project.dvc("repro").stdout
    assert "Running stage" not in out
    assert "up to date" in project.dvc("status").stdout


# `dvc repro --dry` lists the stages whose own params or code changed; the stages below them
# then re-run in a real `dvc repro` only if their inputs' bytes actually change.
STALE_AFTER = {  # a change of this param -> exactly these stages are stale
    ("seq_length", 16): ["make_tfrecords", "evaluate_perplexity"],
    ("data.source", "other.txt"): ["download"],
    ("data.encoding", "latin-1"): ["download"],
    ("data.val_fraction", 0.2): ["make_tfrecords", "evaluate_perplexity"],
    ("data.shard_mb", 1): ["make_tfrecords"],
    ("vocab.min_count", 2): ["build_vocab"],
    ("vocab.max_size", 30): ["build_vocab"],
    ("train.units", 24): ["train"],
    ("train.epochs", 3): ["train"],
    ("train.cell", "lstm"): ["train"],
    ("train.learning_rate", 0.02): ["train"],
    ("sample.temperature", 0.5): ["sample"],
    ("sample.prompts", ("NURSE:",)): ["sample"],
    ("evaluate.batch_size", 4): ["evaluate_perplexity"],
    ("tracking.enabled", False): [],
}


def test_a_params_change_reruns_exactly_the_dependent_stages(project):
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "pipeline outputs")
    for (key, value), expected in STALE_AFTER.items():
        section, _, name = key.rpartition(".")
        value = list(value) if isinstance(value, tuple) else value
        project.set_params({section: {name: value}} if section else {name: value})
        dry = project.dvc("repro", "--dry").stdout
        ran = [line.split("'")[1] for line in dry.splitlines() if line.startswith("Running stage")]
        project.git("checkout", "params.yaml")
        assert ran == expected, f"{key}={value!r}"
    assert "up to date" in project.dvc("status").stdout


STALE_AFTER_EDIT = {
    "src/charrnn/generation.py": ["sample"],
    "src/charrnn/evaluation.py": ["evaluate_perplexity"],
    "src/charrnn/training.py": ["train"],
    "src/charrnn/records.py": ["make_tfrecords", "train", "evaluate_perplexity"],
    "src/charrnn/vocab.py": ["build_vocab", "make_tfrecords", "train", "sample", "evaluate_perplexity"],
    "src/charrnn/tracking.py": [],
}


def test_a_code_change_reruns_exactly_the_stages_that_use_it(project):
    for rel, expected in STALE_AFTER_EDIT.items():
        path = project.root / rel
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        dry = project.dvc("repro", "--dry").stdout
        path.write_text(original)
        ran = [line.split("'")[1] for line in dry.splitlines() if line.startswith("Running stage")]
        assert ran == expected, rel
    assert "up to date" in project.dvc("status").stdout


def test_plots_show_draws_the_loss_curves(project):
    project.dvc("plots", "show", "-o", "plots-out")
    html = (project.root / "plots-out" / "index.html").read_text()
    assert "val_loss" in html and "chars_per_sec" in html


def test_experiment_shows_in_dvc_and_mlflow(project):
    project.dvc("exp", "run", "-n", "one-epoch", "-S", "train.epochs=1")
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    exp = next(e for e in exps if e.get("name") == "one-epoch")
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
    assert "loss" in data["metrics"]["metrics/perplexity.json"]["data"]

    from charrnn import tracking

    runs = tracking.runs_frame(project.root, "charrnn")
    assert len(runs) == 2  # the baseline repro and the experiment; sample/evaluate add to them
    names = runs.iloc[:, list(runs.columns).index("run_name")] if "run_name" in runs else runs.iloc[:, 0]
    assert "one-epoch" in set(names)
    held_out = [c for c in runs.columns if "held_out_loss" in c]
    assert held_out and runs[held_out[0]].notna().all()


def test_cjk_corpus_with_thousands_of_characters(tmp_path):
    """A gb18030-encoded 'novel' with 3,000+ distinct CJK characters, through to samples."""
    import random

    rng = random.Random(1)
    alphabet = [chr(0x4E00 + i) for i in range(3200)]
    text = "".join(rng.choice(alphabet) + ("。\n" if rng.random() < 0.05 else "") for _ in range(60_000))
    text += "".join(alphabet)  # every character at least once
    p = make_project(tmp_path, "", {"data": {"source": "novel.txt", "encoding": "gb18030"},
                                    "sample": {"prompts": ["第一回", "天下"]}, "seq_length": 16})
    (p.root / "novel.txt").write_bytes(text.encode("gb18030"))
    p.dvc("repro")
    vocab = json.loads(p.read("metrics/vocab.json"))
    assert vocab["size"] >= 3_000 and vocab["unk_rate"] == 0.0
    sample = p.read("data/samples/sample-000.txt")
    assert sample.startswith("第一回") and len(sample.strip()) == 3 + 40
    assert json.loads(p.read("metrics/perplexity.json"))["loss"] > 0
