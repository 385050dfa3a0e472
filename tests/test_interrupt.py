"""Killed stages: training resumes where it was, and no stage leaves an output DVC could take
for a valid one. Each kill hits the whole process group of `dvc repro`, as a Ctrl-C in a
terminal, a `kill` from a scheduler or a machine going down would."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charrnn.reprocheck import VOLATILE, compare, lock_outputs
from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow

SLOWER = {"train": {"epochs": 3, "units": 64}}  # a few seconds per epoch: time to kill mid-epoch
STAGES = ["download", "build_vocab", "make_tfrecords", "train", "sample", "evaluate_perplexity"]
BACKUP_STATE = Path("data/cache/train-backup/state.json")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("reference"), shakespeare_like(60_000), SLOWER)
    p.dvc("repro")
    return p


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("victim"), shakespeare_like(60_000), SLOWER)
    p.dvc("repro")
    return p


def start(project, *args: str) -> subprocess.Popen:
    dvc = Path(sys.prefix) / "bin" / "dvc"
    return subprocess.Popen([str(dvc), *args], cwd=project.root, env=project.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_as_in_a_terminal)


def _as_in_a_terminal() -> None:
    # A shell running a job in the background (`make test &`, some CI runners) makes its children
    # ignore SIGINT; in a terminal, Ctrl-C reaches them. Test what a terminal user gets.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_group(proc: subprocess.Popen, sig: int) -> str:
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    if sig != signal.SIGKILL:  # let the stage finish unwinding before anyone looks
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
    return out


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_epoch(project, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    state = project.root / BACKUP_STATE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} was never backed up")


def assert_same_outputs(project, reference) -> None:
    assert "up to date" in project.dvc("status").stdout
    assert compare(lock_outputs(project.root), lock_outputs(reference.root)) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_training_resumes_and_ends_with_the_same_model(victim, reference, sig):
    proc = start(victim, "repro", "-f", "-s", "train")
    wait_for_epoch(victim, 1, proc)
    time.sleep(1.0)  # into epoch 2
    out = kill_group(proc, sig)
    if sig == signal.SIGINT:
        assert "interrupted (Ctrl-C)" in out and "Traceback" not in out
    if sig == signal.SIGTERM:
        assert "interrupted (SIGTERM)" in out and "Traceback" not in out
    assert not (victim.root / "data/model").exists()  # DVC removed the old one; no new one was written
    assert json.loads((victim.root / BACKUP_STATE).read_text())["epoch"] in (1, 2)

    # Here the interrupted training's model is in DVC's cache from the first run, and `dvc repro`
    # would just check it out again. Empty the cache: as for a training that never finished before
    # (new params), `dvc repro` has to train, and resumes from the backup.
    shutil.rmtree(victim.root / ".dvc" / "cache")
    resumed = victim.dvc("repro").stdout
    assert "resuming after epoch" in resumed
    assert not (victim.root / BACKUP_STATE).exists()  # cleared once the outputs were written
    assert_same_outputs(victim, reference)


def test_each_stage_killed_at_a_random_point_leaves_nothing_dvc_would_accept(victim, reference):
    rng = random.Random(20261122)
    for stage in STAGES:
        proc = start(victim, "repro", "-f", "-s", stage)
        time.sleep(rng.uniform(0.5, 6.0))
        if proc.poll() is None:
            kill_group(proc, signal.SIGKILL)
            status = victim.dvc("status").stdout
            assert "up to date" not in status, f"{stage}: a killed stage must not look finished"
        victim.dvc("repro")  # puts everything right again, identical to the reference
        assert_same_outputs(victim, reference)
        # A SIGKILL can leave a temporary behind; never inside an output, only as a hidden
        # sibling that the stage removes the next time it runs.
        for leftover in [*victim.root.glob("data/**/*.tmp"), *victim.root.glob("metrics/**/*.tmp")]:
            assert leftover.name.startswith(".") and leftover.parent.name in ("data", "metrics"), leftover


def test_nan_loss_stops_with_epoch_and_batch_and_writes_no_model(tmp_path):
    p = make_project(tmp_path, shakespeare_like(20_000), {"train": {"learning_rate": 1.0e38}})
    failed = p.dvc("repro", check=False)
    assert failed.returncode != 0
    err = failed.stdout + failed.stderr
    # a loss that overflows is caught as soon as it stops being finite: nan or inf
    assert re.search(r"error: training loss became (nan|inf) at epoch 1, batch \d+: ", err), err[-2000:]
    assert "Traceback" not in err
    assert not (p.root / "data/model").exists()
