"""End to end: the real DVC pipeline on generated corpora, in a throw-away copy of the project."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from charrnn.core import metricfiles
from charrnn.reprocheck import compare, lock_outputs
from charrnn.tracking import runs as tracking
from tests.project import Project, make_project, shakespeare_like

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One full `dvc repro` with MLflow tracking on, shared by the tests below (in order)."""
    p = make_project(tmp_path_factory.mktemp("pipeline"), shakespeare_like(40_000), tracking=True)
    p.repro = p.dvc("repro")
    return p


def test_repro_produces_every_output(project):
    out = project.repro.stdout
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    # the evaluation before sampling: a sample that fails never keeps a model from being evaluated
    assert ran == ["download", "build_vocab", "make_tfrecords", "train", "evaluate_perplexity", "sample"]
    assert "I0000" not in out + project.repro.stderr and "E0000" not in out + project.repro.stderr  # quiet TensorFlow
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
    grid = project.read("data/samples/temperatures.md")
    assert all(f"### temperature {t}" in grid for t in (0.5, 0.8, 1.0)) and grid.count("ROMEO:") >= 3
    copying = json.loads(project.read("metrics/samples.json"))
    assert copying["ngrams_20"] == 2 * 21
    # the copy metrics against a brute-force count over the training text (the first train_chars)
    train = (root / "data/raw/corpus.txt").read_text(encoding="utf-8")[:records["train_chars"]]
    generated = [s.read_text(encoding="utf-8")[len(p):-1] for s, p in zip(samples, ["ROMEO:", "JULIET:"])]
    grams = [g[i:i + 20] for g in generated for i in range(len(g) - 19)]
    assert copying["copied_frac_20"] == pytest.approx(sum(gram in train for gram in grams) / len(grams))
    assert copying["longest_copied"] == max(j - i for g in generated for i in range(len(g))
                                            for j in range(i, len(g) + 1) if g[i:j] in train)
    sampling, evaluation = json.loads(project.read("data/sampling.json")), json.loads(project.read("data/evaluation.json"))
    assert sampling["model"] == evaluation["model"] == metricfiles.model_id(metricfiles.model_hash(root / "data/model"))
    assert sampling["longest_copied_text"] in train and len(sampling["longest_copied_text"]) == copying["longest_copied"]
    for metrics in (copying, held_out, json.loads(project.read("metrics/train.json")),
                    json.loads(project.read("metrics/vocab.json")), records):
        assert all(isinstance(v, (int, float)) or v is None for v in metrics.values()), metrics  # numbers only
    assert not list(root.rglob(".*.tmp"))  # no temporaries left behind


def test_exported_generator_runs_without_the_package(project):
    code = (
        "import sys, tensorflow as tf\n"
        "sys.path = [p for p in sys.path if 'src' not in p]\n"
        "g = tf.saved_model.load('data/generator')\n"
        "out = g.generate(tf.constant(['ROMEO:', 'NURSE:']), tf.constant(25), tf.constant(0.8), tf.constant(3),"
        " tf.constant(1.0), tf.constant(0, tf.int64))\n"
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
    ("data.val_fraction", 0.2): ["make_tfrecords", "evaluate_perplexity", "sample"],
    ("data.shard_mb", 1): ["make_tfrecords"],
    ("vocab.min_count", 2): ["build_vocab"],
    ("vocab.max_size", 30): ["build_vocab"],
    ("train.init_from", "models:/charrnn@base"): ["build_vocab", "train"],  # build_vocab resolves the parent
    ("train.units", 24): ["train"],
    ("train.epochs", 3): ["train"],
    ("train.cell", "lstm"): ["train"],
    ("train.learning_rate", 0.02): ["train"],
    ("sample.temperature", 0.5): ["sample"],
    ("sample.prompts", ("NURSE:",)): ["sample"],
    ("sample.top_p", 0.9): ["sample"],
    ("tracking.registered_model", "other"): [],
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
    "src/charrnn/sampling/generation.py": ["sample"],
    "src/charrnn/nn/evaluation.py": ["evaluate_perplexity"],
    "src/charrnn/nn/training.py": ["train"],
    "src/charrnn/data/records.py": ["make_tfrecords", "train"],
    "src/charrnn/data/split.py": ["build_vocab", "make_tfrecords", "train", "evaluate_perplexity", "sample"],
    "src/charrnn/data/reader.py": ["train"],
    "src/charrnn/sampling/settings.py": ["sample"],
    "src/charrnn/data/vocab.py": ["build_vocab", "make_tfrecords", "train", "evaluate_perplexity", "sample"],
    "src/charrnn/sampling/novelty.py": ["sample"],
    "src/charrnn/nn/lineage.py": ["build_vocab", "train"],
    "src/charrnn/tracking/parents.py": [],  # fetches the parent; its hash, in data/parent.json, is the dependency
    "src/charrnn/core/isa.py": ["train", "evaluate_perplexity", "sample"],
    "src/charrnn/tracking/runs.py": [],
    "src/charrnn/tracking/registry.py": [],
    "src/charrnn/tracking/publishing.py": [],
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

    from charrnn.tracking import table as runs_table

    runs = runs_table.frame(project.root, "charrnn")
    assert len(runs) == 2  # the baseline repro and the experiment; sample/evaluate add to them
    names = runs.iloc[:, list(runs.columns).index("run_name")] if "run_name" in runs else runs.iloc[:, 0]
    assert "one-epoch" in set(names)
    held_out = [c for c in runs.columns if "held_out_loss" in c]
    assert held_out and runs[held_out[0]].notna().all()


def test_cjk_corpus_with_thousands_of_characters_and_the_default_prompts(tmp_path):
    """A gb18030-encoded 'novel' with 3,000+ distinct CJK characters, through to samples, with
    nothing but data.source (and its encoding) changed: the prompts come from its held-out text."""
    import random

    rng = random.Random(1)
    alphabet = [chr(0x4E00 + i) for i in range(3200)]
    text = "".join(rng.choice(alphabet) + ("。\n" if rng.random() < 0.05 else "") for _ in range(60_000))
    text += "".join(alphabet)  # every character at least once
    p = make_project(tmp_path, "", {"data": {"source": "novel.txt", "encoding": "gb18030"}, "seq_length": 16})
    p.set_params({"sample": {"prompts": []}})
    (p.root / "novel.txt").write_bytes(text.encode("gb18030"))
    p.dvc("repro")
    vocab = json.loads(p.read("metrics/vocab.json"))
    assert vocab["size"] >= 3_000 and vocab["unk_rate"] == 0.0
    samples = sorted((p.root / "data/samples").glob("sample-*.txt"))
    assert len(samples) == 3
    for sample in samples:
        prompt = sample.read_text(encoding="utf-8")[:-41]
        assert prompt and prompt in text and all("\u4e00" <= c <= "\u9fff" or c in "。" for c in prompt)
    assert 0 < json.loads(p.read("metrics/perplexity.json"))["loss"] < math.log(vocab["size"])  # beats uniform guessing


def test_a_sample_that_fails_still_leaves_the_model_evaluated(tmp_path):
    p = make_project(tmp_path, shakespeare_like(20_000), {"sample": {"prompts": ["¿¡"]}})
    failed = p.dvc("repro", check=False)
    assert failed.returncode != 0
    assert "has no character of the model's vocabulary" in failed.stdout + failed.stderr
    assert "-S 'sample.prompts=[\"...\"]'" in failed.stdout + failed.stderr
    evaluation = json.loads(p.read("data/evaluation.json"))
    assert evaluation["model"] == metricfiles.model_id(metricfiles.model_hash(p.root / "data/model"))
    assert "loss" in json.loads(p.read("metrics/perplexity.json"))


def test_a_fresh_clone_run_carries_its_held_out_metrics_samples_and_registered_model(project, tmp_path):
    """In a fresh clone of a project with a committed dvc.lock, `dvc repro` retrains (no cache),
    then skips evaluate_perplexity, whose committed metrics already match the byte-identical
    model: the new MLflow run must still end with the held-out metrics, the samples, and a
    registered model version."""
    project.git("add", "-A")
    project.git("commit", "-q", "--allow-empty", "-m", "pipeline outputs")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project.root), str(clone)], check=True)
    if not (clone / ".venv").exists():
        (clone / ".venv").symlink_to(project.root / ".venv")
    fresh = Project(clone, project.env)
    out = fresh.dvc("repro").stdout
    assert "Running stage 'train'" in out and "Stage 'evaluate_perplexity' didn't change, skipping" in out
    assert compare(lock_outputs(clone), lock_outputs(project.root)) == []  # the same model, byte for byte

    client = tracking.client(tracking.tracking_uri(clone))
    (run,) = client.search_runs([client.get_experiment_by_name("charrnn").experiment_id])
    held_out = json.loads(fresh.read("metrics/perplexity.json"))
    assert run.data.metrics["held_out_bpc"] == pytest.approx(held_out["bpc"])
    assert run.data.metrics["held_out_loss"] == pytest.approx(held_out["loss"])
    assert "copied_frac_20" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "samples")} >= {"samples/sample-000.txt"}
    assert run.data.tags["charrnn.git_dirty"] == "false"  # the pipeline's own outputs do not count
    (version,) = client.search_model_versions("name = 'charrnn'")
    assert version.run_id == run.info.run_id
    assert version.tags["charrnn.held_out_bpc"] == f"{held_out['bpc']:.4f}"
    assert version.tags["charrnn.model_hash"] == run.data.tags["charrnn.model_hash"]
    table = fresh.run(str(Path(sys.prefix) / "bin" / "charrnn"), "runs").stdout
    assert "held_out_bpc" in table.splitlines()[0]
