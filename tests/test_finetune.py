"""Fine-tuning (train.init_from) through the real pipeline: a parent trained and registered, then a
model fine-tuned from `models:/charrnn@base` on a second corpus with characters the parent never
saw, against training from scratch on that corpus; lineage in metrics/train.json and in MLflow;
what DVC re-runs when the alias moves and when it does not."""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest

from charrnn.core import files
from charrnn.tracking import search_runs
from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow

CHARRNN = str(Path(sys.prefix) / "bin" / "charrnn")
NEW_CHARS = "éö"


def second_corpus() -> str:
    """Another text of the same language, with two characters the first corpus lacks."""
    return shakespeare_like(20_000, seed=1).replace("e ", "é ").replace("o", "ö")


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def first_epoch_loss(project) -> float:
    return float(next(csv.DictReader(io.StringIO(project.read("metrics/history.csv"))))["loss"])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project that trained a parent on one corpus and registered it as models:/charrnn@base."""
    project = make_project(tmp_path_factory.mktemp("finetune") / "p", shakespeare_like(20_000),
                           {"train": {"epochs": 3}}, tracking=True)
    project.dvc("repro")
    project.run(CHARRNN, "promote", "1", "--alias", "base")
    (project.root / "corpora").mkdir(exist_ok=True)
    (project.root / "corpora/second.txt").write_text(second_corpus(), encoding="utf-8")
    project.parent_vocab = json.loads(project.read("data/model/vocab.json"))["chars"]
    project.parent_hash = files.sha256_tree(project.root / "data/model")
    return project


def test_a_fine_tuned_model_extends_the_vocabulary_records_its_parent_and_starts_ahead(project):
    project.set_params({"data": {"source": "corpora/second.txt"}, "train": {"epochs": 1, "init_from": ""}})
    project.dvc("repro")
    scratch = first_epoch_loss(project)

    project.set_params({"train": {"init_from": "models:/charrnn@base"}})
    out = project.dvc("repro").stdout
    assert ran(out) == ["build_vocab", "make_tfrecords", "train", "evaluate_perplexity", "sample"]
    chars = json.loads(project.read("data/vocab.json"))["chars"]
    assert chars[:len(project.parent_vocab)] == project.parent_vocab  # the parent's ids, unchanged
    assert sorted(chars[len(project.parent_vocab):]) == sorted(NEW_CHARS)
    assert json.loads(project.read("metrics/vocab.json"))["new_ids"] == len(NEW_CHARS)
    config = json.loads(project.read("data/model/config.json"))
    assert config["vocab_size"] == len(chars) + 1 and config["units"] == 32  # the parent's architecture

    parent = {"init_from": "models:/charrnn@base", "model_hash": project.parent_hash, "registered_model": "charrnn",
              "version": "1"}
    assert json.loads(project.read("data/parent.json")) == parent
    assert json.loads(project.read("metrics/train.json"))["parent_version"] == 1  # numbers only there
    assert first_epoch_loss(project) < scratch - 0.1, (first_epoch_loss(project), scratch)

    runs = search_runs(project.root)
    fine_tuned = runs[0]["tags"]
    assert fine_tuned["charrnn.parent_model_hash"] == project.parent_hash
    assert fine_tuned["charrnn.parent_version"] == "models:/charrnn/1"
    assert fine_tuned["charrnn.init_from"] == "models:/charrnn@base"
    assert re.fullmatch("[0-9a-f]{32}", fine_tuned["charrnn.parent_run_id"])  # the parent's training run

    assert ran(project.dvc("repro").stdout) == []
    assert "up to date" in project.dvc("status").stdout


def test_an_alias_that_moves_retrains_and_one_that_stays_does_not(project):
    project.set_params({"data": {"source": "corpora/second.txt"}, "train": {"epochs": 1,
                                                                              "init_from": "models:/charrnn@base"}})
    project.dvc("repro")
    trained = files.sha256_tree(project.root / "data/model")

    # the alias stays: resolving it again changes nothing downstream
    out = project.dvc("repro", "-f", "-s", "build_vocab").stdout + project.dvc("repro").stdout
    assert ran(out) == ["build_vocab"]
    assert files.sha256_tree(project.root / "data/model") == trained

    # the alias moves to version 2 (a model the sample stage registered since)
    project.run(CHARRNN, "promote", "2", "--alias", "base")
    out = project.dvc("repro", "-f", "-s", "build_vocab").stdout + project.dvc("repro").stdout
    assert "train" in ran(out)
    assert json.loads(project.read("data/parent.json"))["version"] == "2"
    assert files.sha256_tree(project.root / "data/model") != trained
    assert "up to date" in project.dvc("status").stdout
