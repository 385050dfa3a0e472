"""Across machines: the same CPU kernels everywhere (charrnn.core.isa), and a tiny training whose
bytes must equal the hashes committed in tests/data/isa/ for this kind of CPU (the kinds recorded
so far do not agree with each other: README "Reproducibility")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn.core import isa
from tests.project import REPO

RECORDS = REPO / "tests" / "data" / "isa"  # one record per kind of CPU: <cpu>.json
KIND = ("charrnn.cpu_model", "charrnn.cpu_flags")


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
    reads them (IsMklEnabled is TensorFlow's reading of TF_ENABLE_ONEDNN_OPTS)."""
    code = ("import os, charrnn.nn.network\n"
            "from tensorflow.python.util import _pywrap_util_port as port\n"
            "print(os.environ['ONEDNN_MAX_CPU_ISA'], port.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k not in isa.PINS}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["AVX2", "False"]


def recorded_for(machine: dict) -> tuple[Path | None, dict | None]:
    """The record made on this kind of CPU (same model name and instruction-set flags), if any."""
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        if all(record["machine"][k] == machine[k] for k in KIND):
            return path, record
    return None, None


def test_the_records_say_what_is_promised_and_what_is_not():
    """Every record was made with the pin in effect. CPUs of one model name agree on every byte
    with and without AVX-512 (the pin's work: AMD EPYC with AVX2 only and with AVX-512); CPUs of
    other model names do not agree on the weights' last bits (AMD EPYC, Intel Xeon): README
    "Reproducibility" says so, and it is why each kind has its own record."""
    records = [json.loads(path.read_text()) for path in sorted(RECORDS.glob("*.json"))]
    assert len(records) >= 3 and all(r["machine"]["charrnn.cpu_pinned"] == "true" for r in records)
    assert len({r["hashes"]["history.csv"] for r in records}) == 1  # the losses as written agree
    by_model = {}
    for r in records:
        by_model.setdefault(r["machine"]["charrnn.cpu_model"], []).append(r)
    for model, same in by_model.items():
        assert len({r["hashes"]["model.weights.h5"] for r in same}) == 1, model
    with_and_without = [same for same in by_model.values()
                        if len({"avx512f" in r["machine"]["charrnn.cpu_flags"].split() for r in same}) == 2]
    assert with_and_without, "no CPU model recorded both with and without AVX-512"
    assert len({same[0]["hashes"]["model.weights.h5"] for same in by_model.values()}) == len(by_model)


@pytest.mark.slow
def test_tiny_training_matches_the_hashes_recorded_on_this_kind_of_cpu():
    got = probe()
    path, recorded = recorded_for(got["machine"])
    if recorded is None:
        pytest.fail(
            f"no record in {RECORDS.relative_to(REPO)} for this kind of CPU "
            f"({', '.join(got['machine'][k] for k in KIND)}): its bytes are {got['hashes']}. The kinds "
            "recorded so far train other bytes from each other (README \"Reproducibility\"), so this "
            "runner's cannot be checked; record it from a commit known good: "
            f"python -m tests.isa_probe > {RECORDS.relative_to(REPO)}/<cpu>.json")
    if got["hashes"] != recorded["hashes"]:
        pytest.fail(
            f"a tiny training's bytes differ from {path.relative_to(REPO)}, made on this kind of CPU:\n"
            f"  recorded {recorded['hashes']}\n  got      {got['hashes']}\n"
            f"  recorded on {recorded['machine']} with {recorded['software']}\n"
            f"  this runner {got['machine']} with {got['software']}\n"
            "A regression, or this runner? Check out the commit that recorded the hashes "
            f"(`git log -1 -- {path.relative_to(REPO)}`) and run `python -m tests.isa_probe` there: the "
            "same hashes as here mean this runner differs (other TensorFlow/Keras/NumPy versions, a "
            "user's ONEDNN_MAX_CPU_ISA/TF_ENABLE_ONEDNN_OPTS: see cpu_pinned, or a CPU that reports the "
            "same model name but is another), not the code; the recorded hashes there mean a change "
            "since then altered the bytes. Re-record only for an intended change.")


@pytest.mark.slow
def test_the_unpinned_kernels_would_change_the_bytes():
    """What the pin guards against, shown on this machine: oneDNN's custom ops (on by themselves on
    AVX-512 VNNI CPUs) give other bytes; so does a lower instruction set than AVX2."""
    if not isa.pinned():
        pytest.skip("this CPU has no AVX2: the promise does not cover it")
    pinned = probe()["hashes"]["model.weights.h5"]
    assert probe(TF_ENABLE_ONEDNN_OPTS="1")["hashes"]["model.weights.h5"] != pinned
    assert probe(ONEDNN_MAX_CPU_ISA="SSE41")["hashes"]["model.weights.h5"] != pinned
