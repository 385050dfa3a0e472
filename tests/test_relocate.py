"""A copied or moved project logs into its own store: MLflow's absolute artifact locations are
pointed at the project's own mlruns/artifacts again (charrnn.tracking.relocate)."""
import shutil

import pytest

from charrnn.core.params import Params
from charrnn.tracking import runs as tracking


@pytest.fixture
def original(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_TRACKING", "1")
    for name in ("DVC_EXP_NAME", "DVC_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "original"
    (root / "mlruns").mkdir(parents=True)
    return root


def logged(root, text: str) -> str:
    (root / "note.txt").write_text(text)
    with tracking.train_run(Params(), root) as run:
        run.log_artifact(root / "note.txt")
    return run.run_id


def files_under(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def test_a_copied_project_writes_and_reads_its_own_artifacts(original, tmp_path):
    first = logged(original, "in the original")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = files_under(original / "mlruns" / "artifacts")

    second = logged(copy, "in the copy")

    assert files_under(original / "mlruns" / "artifacts") == before  # nothing new in the original
    c = tracking.client(tracking.tracking_uri(copy))
    for run_id in (first, second):
        assert c.get_run(run_id).info.artifact_uri.startswith((copy / "mlruns" / "artifacts").as_uri())
    experiment = c.get_experiment(c.get_run(second).info.experiment_id)
    assert experiment.artifact_location == (copy / "mlruns" / "artifacts").as_uri()
    got = c.download_artifacts(first, "note.txt", str(tmp_path / "down"))
    assert open(got).read() == "in the original"  # the copy's own copy of the first run's file
    (original / "mlruns" / "artifacts").rename(tmp_path / "gone")  # and it does not need the original
    assert open(c.download_artifacts(second, "note.txt", str(tmp_path / "down2"))).read() == "in the copy"


def test_the_original_is_left_as_it_is(original):
    logged(original, "a")
    c = tracking.client(tracking.tracking_uri(original))
    location = c.get_experiment_by_name("charrnn").artifact_location
    logged(original, "b")
    assert c.get_experiment_by_name("charrnn").artifact_location == location
