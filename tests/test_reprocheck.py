"""The reproducibility check itself (issue: same params and data give the same bytes)."""
import subprocess

import pytest

from charrnn import reprocheck
from tests.project import REPO

pytestmark = pytest.mark.slow


def test_compare_names_stage_and_file():
    a = {("train", "data/model/model.weights.h5"): "aaaa1111", ("train", "metrics/throughput.csv"): "x",
         ("sample", "data/samples/sample-000.txt"): "cccc"}
    b = {("train", "data/model/model.weights.h5"): "bbbb2222", ("train", "metrics/throughput.csv"): "y"}
    assert reprocheck.compare(a, b) == [
        "stage 'sample': data/samples/sample-000.txt exists in only one run",
        "stage 'train': data/model/model.weights.h5 differs (aaaa1111 vs bbbb2222)",
    ]


def test_the_pipeline_is_byte_reproducible(tmp_path):
    """Two runs from nothing, separate caches and MLflow stores: every output hash matches."""
    assert reprocheck.check(REPO, tmp_path) == []


def test_broken_determinism_is_caught_and_named(tmp_path):
    """An unseeded training run must make the check fail, naming the train stage."""
    source = tmp_path / "sabotaged"
    source.mkdir()
    for rel in reprocheck.project_files(REPO):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes((REPO / rel).read_bytes())
    train = source / "stages" / "train.py"
    code = train.read_text()
    assert "training.configure(params.train.seed" in code
    train.write_text(code.replace("training.configure(params.train.seed",
                                  "training.configure(__import__('random').SystemRandom().randrange(2**31)"))
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    problems = reprocheck.check(source, tmp_path / "runs", target="train")
    assert problems, "an unseeded run went unnoticed"
    assert all(p.startswith("stage 'train'") for p in problems)
    assert any("data/model/model.weights.h5 differs" in p for p in problems)
