"""Across machines: the same CPU kernels everywhere (charrnn.core.isa), and a tiny training whose
bytes must equal the hashes committed in tests/data/isa/tiny.json on any x86-64 CPU with AVX2."""
import json
import os
import subprocess
import sys

import pytest

from charrnn.core import isa
from tests.project import REPO

RECORDED = REPO / "tests" / "data" / "isa" / "tiny.json"


def probe(**env) -> dict:
    """tests/isa_probe.py in a fresh process, with the pins' variables as given (None: unset)."""
    base = {k: v for k, v in os.environ.items() if k not in isa.PINS}
    base.update({k: v for k, v in env.items() if v is not None})
    done = subprocess.run([sys.executable, "-m", "tests.isa_probe"], cwd=REPO, env=base, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_pin_sets_both_variables_and_keeps_the_users(monkeypatch):
    for name in isa.PINS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    isa.pin()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"  # the user's: kept, and told in the tags
    assert isa.describe()["charrnn.cpu_pins"] == "TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX512_CORE TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false"
    assert isa.describe()["charrnn.cpu_pinned"] == "false"


def test_tensorflow_loaded_after_charrnn_runs_the_pinned_kernels():
    """No variable set by the caller: importing charrnn first is what pins them, before TensorFlow
    reads them (IsMklEnabled is TensorFlow's reading of TF_ENABLE_ONEDNN_OPTS)."""
    code = ("import os, charrnn.nn.network\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "print(os.environ['ONEDNN_MAX_CPU_ISA'], os.environ['TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL'], "
            "port.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k not in isa.PINS}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["AVX2", "false", "False"]


@pytest.mark.slow
def test_tiny_training_matches_the_committed_hashes():
    recorded = json.loads(RECORDED.read_text())
    got = probe()
    if got["hashes"] != recorded["hashes"]:
        pytest.fail(
            f"a tiny training's bytes differ from {RECORDED.relative_to(REPO)}:\n"
            f"  recorded {recorded['hashes']}\n  got      {got['hashes']}\n"
            f"  recorded on {recorded['machine']} with {recorded['software']}\n"
            f"  this runner {got['machine']} with {got['software']}\n"
            "A regression, or this runner? Check out the commit that recorded the hashes "
            "(`git log -1 -- tests/data/isa/tiny.json`) and run `python -m tests.isa_probe` there on this "
            "runner: the same hashes as here mean this runner differs (no AVX2, another architecture, "
            "other TensorFlow/Keras/NumPy versions, or a user's ONEDNN_MAX_CPU_ISA/TF_ENABLE_ONEDNN_OPTS: "
            "see cpu_pinned), not the code; the recorded hashes there mean a change since then altered "
            "the bytes. Re-record only for an intended change: python -m tests.isa_probe > tests/data/isa/tiny.json")


@pytest.mark.slow
def test_the_unpinned_kernels_would_change_the_bytes():
    """What the pin guards against, shown on this machine: oneDNN's custom ops (on by themselves on
    AVX-512 VNNI CPUs) give other bytes; so do oneDNN's sgemm kernels, by instruction set."""
    if not isa.pinned():
        pytest.skip("this CPU has no AVX2: the promise does not cover it")
    recorded = json.loads(RECORDED.read_text())["hashes"]
    assert probe(TF_ENABLE_ONEDNN_OPTS="1")["hashes"]["model.weights.h5"] != recorded["model.weights.h5"]
    onednn_sgemm = {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "true"}
    assert (probe(**onednn_sgemm, ONEDNN_MAX_CPU_ISA="SSE41")["hashes"]["model.weights.h5"]
            != probe(**onednn_sgemm)["hashes"]["model.weights.h5"])


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["SSE41", "DEFAULT"])
def test_pinned_bytes_do_not_depend_on_the_instruction_set_onednn_may_use(limit):
    """With Eigen's own matrix kernel, limiting oneDNN to SSE4.1 or leaving it all this CPU has
    (AVX-512, AMX where there) gives the recorded bytes: the kernels no longer vary with the CPU."""
    if not isa.pinned():
        pytest.skip("this CPU has no AVX2: the promise does not cover it")
    assert probe(ONEDNN_MAX_CPU_ISA=limit)["hashes"] == json.loads(RECORDED.read_text())["hashes"]
