"""A shared DVC cache: push from one clone, pull into a fresh clone, nothing re-runs."""
import subprocess

import pytest

from tests.project import Project, make_project, shakespeare_like

pytestmark = pytest.mark.slow


def test_push_then_pull_into_a_fresh_clone_is_up_to_date(tmp_path):
    first = make_project(tmp_path / "first", shakespeare_like(20_000), {"train": {"epochs": 1}})
    remote = tmp_path / "remote"
    first.dvc("remote", "add", "-d", "shared", str(remote))
    first.dvc("repro")
    first.git("add", "-A")
    first.git("commit", "-q", "-m", "results")
    first.dvc("push")
    assert any(p.is_file() for p in remote.rglob("*"))

    subprocess.run(["git", "clone", "-q", str(first.root), str(tmp_path / "second")], check=True)
    second = Project(tmp_path / "second", first.env)
    if not (second.root / ".venv").exists():  # the copy may have committed its venv link
        (second.root / ".venv").symlink_to((first.root / ".venv").resolve())
    second.dvc("pull")
    assert "up to date" in second.dvc("status").stdout
    assert "Running stage" not in second.dvc("repro").stdout  # nothing re-runs
    for rel in ("data/model/model.weights.h5", "data/samples/sample-000.txt", "data/records/meta.json"):
        assert (second.root / rel).read_bytes() == (first.root / rel).read_bytes(), rel
