"""Across machines: the same CPU kernels everywhere (charrnn.core.isa), and a tiny training whose
bytes must equal the hashes committed in tests/data/isa/pinned.json, measured on three kinds of
CPU (README "Reproducibility"): a runner that trains other bytes fails, saying which."""
import json
import os
import subprocess
import sys

import pytest

from charrnn.core import isa
from tests.project import REPO

RECORD = REPO / "tests" / "data" / "isa" / "pinned.json"


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
    assert isa.describe()["charrnn.cpu_pins"] == "TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX512_CORE"
    assert isa.describe()["charrnn.cpu_pinned"] == "false"


def test_tensorflow_loaded_after_charrnn_runs_the_pinned_kernels():
    """No variable set by the caller: importing charrnn first is what pins them, before TensorFlow
    reads them (IsMklEnabled is TensorFlow's reading of TF_ENABLE_ONEDNN_OPTS), and a matrix
    product then runs oneDNN's SSE4.1 sgemm (its own report, ONEDNN_VERBOSE)."""
    code = ("import os, charrnn.nn.network\n"
            "import tensorflow as tf\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "tf.matmul(tf.ones((256, 256)), tf.ones((256, 256)))\n"
            "print(os.environ['ONEDNN_MAX_CPU_ISA'], port.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k not in isa.PINS} | {"ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == [isa.PINS["ONEDNN_MAX_CPU_ISA"], "False"]
    assert "isa:Intel SSE4.1" in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]


def test_the_record_was_measured_where_it_promises():
    """On CPUs with and without AVX-512, of two vendors, each under the pin it records."""
    record = json.loads(RECORD.read_text())
    assert record["pins"] == " ".join(f"{k}={v}" for k, v in isa.PINS.items())
    machines = record["measured_on"]
    assert {"avx512f" in m["cpu_flags"].split() for m in machines} == {True, False}
    assert len({m["cpu_model"].split()[0] for m in machines}) >= 2  # AMD, Intel(R)
    assert all("avx2" in m["cpu_flags"].split() for m in machines)


@pytest.mark.slow
def test_tiny_training_matches_the_hashes_committed():
    got = probe()
    record = json.loads(RECORD.read_text())
    if got["hashes"] != record["hashes"]:
        where = "\n".join(f"    {m['cpu_model']} ({m['cpu_flags']}), {m['date']}" for m in record["measured_on"])
        pytest.fail(
            f"a tiny training's bytes differ from {RECORD.relative_to(REPO)}:\n"
            f"  committed {record['hashes']}\n  got       {got['hashes']}\n"
            f"  committed under {record['pins']} with {record['software']}, measured the same on:\n{where}\n"
            f"  this runner {got['machine']} with {got['software']}\n"
            "A regression, or this runner? Check out the commit that last wrote the record "
            f"(`git log -1 -- {RECORD.relative_to(REPO)}`) and run `python -m tests.isa_probe` there: the "
            "same hashes as here mean this runner differs (other TensorFlow/Keras/NumPy versions, a "
            "user's ONEDNN_MAX_CPU_ISA/TF_ENABLE_ONEDNN_OPTS: see cpu_pinned, another core count, or a "
            "kind of CPU that trains other bytes: then add it to README \"Reproducibility\"), not the "
            "code; the committed hashes there mean a change since then altered the bytes. Re-record "
            "only for an intended change.")


@pytest.mark.slow
def test_the_unpinned_kernels_would_change_the_bytes():
    """What the pin guards against, shown on this machine: TensorFlow's own choice (oneDNN's custom
    ops, on by themselves on AVX-512 VNNI CPUs) gives other bytes; so does oneDNN's AVX2 sgemm,
    whose threading follows the CPU's L2 cache size."""
    if not isa.pinned():
        pytest.skip("this CPU has no AVX2: the promise does not cover it")
    pinned = probe()["hashes"]["model.weights.h5"]
    assert probe(TF_ENABLE_ONEDNN_OPTS="1", ONEDNN_MAX_CPU_ISA="DEFAULT")["hashes"]["model.weights.h5"] != pinned
    assert probe(ONEDNN_MAX_CPU_ISA="AVX2")["hashes"]["model.weights.h5"] != pinned
