"""Killed stages: training resumes where it was, and no stage leaves an output DVC could take
for a valid one. Each kill hits the whole process group of `dvc repro`, as a Ctrl-C in a
terminal, a `kill` from a scheduler or a machine going down would."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from charrnn.reprocheck import compare, lock_outputs
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
    # A SIGKILLed process cannot remove its private temporary folder: these stay with the test's
    # files, not in the machine's /tmp
    p.env["TMPDIR"] = str(tmp_path_factory.mktemp("victim-tmp"))
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


def kill_group(proc: subprocess.Popen, sig: int, already_sent: bool = False) -> str:
    if not already_sent:
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
    before = model_files(victim)
    proc = start(victim, "repro", "-f", "-s", "train")
    wait_for_epoch(victim, 1, proc)
    os.killpg(proc.pid, signal.SIGSTOP)  # frozen after epoch 1: the kill surely hits a training at work
    assert stage_process(proc.pid, "train") is not None
    assert json.loads((victim.root / BACKUP_STATE).read_text())["epoch"] < SLOWER["train"]["epochs"]
    os.killpg(proc.pid, sig)
    os.killpg(proc.pid, signal.SIGCONT)  # let it take the signal (SIGKILL needs no help)
    out = kill_group(proc, sig, already_sent=True)
    if sig == signal.SIGINT:
        assert "interrupted (Ctrl-C)" in out and "Traceback" not in out
    if sig == signal.SIGTERM:
        assert "interrupted (SIGTERM)" in out and "Traceback" not in out
    # persist: true: the previous model is left as it was, no new one was written
    assert model_files(victim) == before
    assert json.loads((victim.root / BACKUP_STATE).read_text())["epoch"] in (1, 2)

    # The previous model is whole and up to date, so a plain `dvc repro` would do nothing: forced,
    # the training resumes from the backup.
    resumed = victim.dvc("repro", "-f", "-s", "train").stdout  # the old model is whole: force the training
    assert "resuming after epoch" in resumed
    assert not (victim.root / BACKUP_STATE).exists()  # cleared once the outputs were written
    assert_same_outputs(victim, reference)


def model_files(project) -> list[tuple[str, bytes]]:
    return sorted((p.name, p.read_bytes()) for p in (project.root / "data/model").rglob("*") if p.is_file())


def stage_process(pgid: int, stage: str) -> int | None:
    """The pid of the process of the group running stages/<stage>.py, if any."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == pgid and \
                    f"stages/{stage}.py" in (proc / "cmdline").read_bytes().decode(errors="replace"):
                return int(proc.name)
        except (OSError, ProcessLookupError):
            continue
    return None


def kill_while_at_work(project, stage: str, rng: random.Random) -> None:
    """Run `dvc repro -f -s <stage>`, wait until the stage's own process runs, let it work a
    random moment, freeze the whole group, check the stage is still there, and SIGKILL it: a
    kill that provably hit the stage at work. Retried (shorter waits) if the stage was quicker."""
    for attempt in range(8):
        proc = start(project, "repro", "-f", "-s", stage)
        deadline = time.monotonic() + 120
        while (pid := stage_process(proc.pid, stage)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, f"{stage} never started"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0) / (attempt + 1))
        os.killpg(proc.pid, signal.SIGSTOP)
        if stage_process(proc.pid, stage) == pid:  # frozen at work: dvc itself only waits for it
            kill_group(proc, signal.SIGKILL)
            return
        # The stage finished first: dvc may be writing dvc.lock or its rwlock, in place, and a kill
        # there would cut DVC's own files short (treeverse/dvc#7615). Let it finish, and try again.
        os.killpg(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    raise AssertionError(f"{stage} finished before every kill")


def test_each_stage_killed_while_at_work_leaves_nothing_dvc_would_accept(victim, reference):
    rng = random.Random(20261122)
    for stage in STAGES:
        kill_while_at_work(victim, stage, rng)
        if "up to date" in victim.dvc("status").stdout:
            # killed after its outputs were complete and in place (while printing or exiting):
            # what DVC takes for valid must then be exactly what an uninterrupted run makes
            assert_same_outputs(victim, reference)
        victim.dvc("repro")  # puts everything right again, identical to the reference
        assert_same_outputs(victim, reference)
        # A SIGKILL can leave a temporary behind; never inside an output, only as a hidden
        # sibling of one (.<name>.*.tmp) that the stage removes the next time it runs.
        outputs = declared_outputs(victim)
        for leftover in [*victim.root.glob("data/**/*.tmp"), *victim.root.glob("metrics/**/*.tmp")]:
            assert not any(out in leftover.parents for out in outputs), leftover
            assert any(leftover.parent == out.parent and leftover.name.startswith(f".{out.name}.")
                       for out in outputs), leftover


def declared_outputs(project) -> set[Path]:
    lock = yaml.safe_load((project.root / "dvc.lock").read_text(encoding="utf-8"))
    return {project.root / out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def run_stage_and_signal(project, stage: str, sig: int, after: float, python: Path | None = None,
                         held_back: bool = False) -> subprocess.CompletedProcess:
    env = {**project.env, "CHARRNN_TRACKING": "0"}
    python = python or Path(sys.prefix) / "bin" / "python"
    proc = subprocess.Popen([str(python), f"stages/{stage}.py"], cwd=project.root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_holding_back_stops if held_back else _as_in_a_terminal)
    time.sleep(after)
    proc.send_signal(sig)  # sends nothing to a process that has already ended
    signalled = proc.returncode is None
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out), signalled


def assert_ended_before_the_signal(done: subprocess.CompletedProcess, work_line: str) -> None:
    """A fast machine can finish the stage before a late moment: nothing was interrupted."""
    assert done.returncode == 0 and work_line in done.stdout, (done.returncode, done.stdout[-2000:])


def _holding_back_stops() -> None:
    _as_in_a_terminal()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


# Python's own start-up (site, the .pth files, finding the script's first import) runs before any
# line of a script and answers a Ctrl-C with its own traceback: no script can own that moment.
# _bootstrap holds the signals back across its re-exec and lets them in once its hook is set; the
# held-back cases below stand for that moment, for the venv's interpreter and for a re-exec from
# another one. The timed cases start after Python's start-up, through the imports into the work.
@pytest.mark.parametrize("python", ["venv", "base"])
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_held_back_through_start_up_ends_the_stage_cleanly(victim, python, sig, status):
    interpreter = Path(sys.prefix if python == "venv" else sys.base_prefix) / "bin" / "python3"
    done, _ = run_stage_and_signal(victim, "evaluate_perplexity", sig, 0, interpreter, held_back=True)
    assert "Traceback" not in done.stdout, done.stdout[-3000:]
    assert done.returncode == status, (done.returncode, done.stdout[-2000:])
    assert "interrupted while starting" in done.stdout


@pytest.mark.parametrize("after", [0.3, 0.6, 1.0, 2.0, 4.0])
def test_ctrl_c_at_any_moment_of_start_up_ends_cleanly(victim, after):
    """From the end of Python's own start-up through the imports (TensorFlow's included) into the work."""
    done, signalled = run_stage_and_signal(victim, "evaluate_perplexity", signal.SIGINT, after)
    assert "Traceback" not in done.stdout, done.stdout[-3000:]
    assert signalled or after > 1.0, "the stage cannot end before TensorFlow is even imported"
    if not signalled:
        assert_ended_before_the_signal(done, "held-out loss")
    elif done.returncode == -signal.SIGINT:
        # Python's finalization puts SIGINT back to its default action, so a Ctrl-C that comes
        # after the work ends the process by the signal itself (the shell's 130 too); only then
        assert "held-out loss" in done.stdout, done.stdout[-2000:]
    else:
        assert done.returncode == 130, (done.returncode, done.stdout[-2000:])


@pytest.mark.parametrize("after", [0.3, 3.0])
def test_sigterm_at_any_moment_ends_with_143(victim, after):
    done, signalled = run_stage_and_signal(victim, "sample", signal.SIGTERM, after)
    assert "Traceback" not in done.stdout, done.stdout[-3000:]
    assert signalled or after > 1.0, "the stage cannot end before TensorFlow is even imported"
    if not signalled:
        assert_ended_before_the_signal(done, "sample(s) of")
        return
    assert done.returncode in (143, -signal.SIGTERM), (done.returncode, done.stdout[-2000:])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_very_long_generation_streams_in_bounded_memory_and_stops_at_once(reference, sig, status):
    proc = subprocess.Popen([str(Path(sys.prefix) / "bin" / "charrnn"), "generate", "--prompt", "ROMEO:",
                             "--num-chars", "100000000", "--max-chars", "100000000"],
                            cwd=reference.root, env=reference.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_as_in_a_terminal)
    received = proc.stdout.read(2000)  # text arrives while it is being generated
    assert received.startswith(b"ROMEO:")
    drained = []
    reader = threading.Thread(target=lambda: drained.append(len(proc.stdout.read())), daemon=True)
    reader.start()
    time.sleep(2)
    early = rss_mib(proc.pid)
    time.sleep(8)
    late = rss_mib(proc.pid)
    assert late - early < 64, f"memory grew from {early:.0f} to {late:.0f} MiB while generating"
    asked = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == status
    assert time.monotonic() - asked < 3, "it took more than 3 s to stop"
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "interrupted" in err


def test_nan_loss_stops_with_epoch_and_batch_and_writes_no_model(tmp_path):
    p = make_project(tmp_path, shakespeare_like(20_000), {"train": {"learning_rate": 1.0e38}})
    failed = p.dvc("repro", check=False)
    assert failed.returncode != 0
    err = failed.stdout + failed.stderr
    # a loss that overflows is caught as soon as it stops being finite: nan or inf
    assert re.search(r"error: training loss became (nan|inf) at epoch 1, batch \d+: ", err), err[-2000:]
    assert "Traceback" not in err
    assert not (p.root / "data/model").exists()
