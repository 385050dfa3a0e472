"""Data stages on a big generated corpus: download (from a local file), build_vocab, make_tfrecords: MB/s and peak memory.

Each stage runs as the real DVC stage script (stages/<name>.py) in a scratch project directory,
as its own process: the wall time includes starting Python and importing what the stage imports,
and the peak resident memory is the process's own (os.wait4's ru_maxrss).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, generated_text

from charrnn.core.params import with_changes


def write_corpus(path: Path, mb: int) -> int:
    """mb MiB of generated text, written in 8 MiB pieces (different seeds) to keep this process small."""
    path.parent.mkdir(parents=True, exist_ok=True)
    piece = 8 << 20
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i in range(0, mb << 20, piece):
            f.write(generated_text(min(piece, (mb << 20) - i), seed=i))
    return path.stat().st_size


def run_stage(name: str, cwd: Path) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one stage script run in cwd."""
    env = {**os.environ, "CHARRNN_TRACKING": "0"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / f"{name}.py")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"stage {name} failed:\n{out.decode(errors='replace')}")
    return seconds, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def bench(mb: int = 200) -> list[dict]:
    """download (from a local file) -> build_vocab -> make_tfrecords on `mb` MiB of text."""
    scratch = Path(tempfile.mkdtemp(prefix="charrnn-bench-data-"))
    try:
        text = with_changes((REPO / "params.yaml").read_text(encoding="utf-8"), {"data": {"source": "source.txt"}})
        (scratch / "params.yaml").write_text(text, encoding="utf-8")
        shutil.copyfile(REPO / "dvc.yaml", scratch / "dvc.yaml")  # the stages look for the project root
        size = write_corpus(scratch / "source.txt", mb)
        (scratch / "metrics").mkdir()
        results = {name: run_stage(name, scratch) for name in ("download", "build_vocab", "make_tfrecords")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    download = results.pop("download")
    seconds = sum(s for s, _ in results.values())
    peak = max(r for _, r in results.values())
    rows = [{"row": f"data: {name} ({size / 1e6:.0f} MB corpus)", "ours": size / 1e6 / s, "unit": "MB/s",
             "note": f"{s:.1f} s, peak RSS {r / 2**20:.0f} MiB"} for name, (s, r) in results.items()]
    rows.append({"row": f"data: build_vocab + make_tfrecords ({size / 1e6:.0f} MB)", "ours": size / 1e6 / seconds,
                 "unit": "MB/s", "target": ">= 20 MB/s", "met": size / 1e6 / seconds >= 20,
                 "note": f"{seconds:.1f} s"})
    rows.append({"row": "data: peak RSS of either stage", "ours": peak / 2**20, "unit": "MiB",
                 "target": "< 1024 MiB", "met": peak < 1 << 30})
    everything = seconds + download[0], max(peak, download[1])
    rows.append({"row": f"data: download + build_vocab + make_tfrecords ({size / 1e6:.0f} MB)",
                 "ours": size / 1e6 / everything[0], "unit": "MB/s",
                 "note": f"{everything[0]:.1f} s; download alone {download[0]:.1f} s"})
    rows.append({"row": "data: peak RSS of the three stages", "ours": everything[1] / 2**20, "unit": "MiB",
                 "target": "< 1024 MiB", "met": everything[1] < 1 << 30})
    return rows


if __name__ == "__main__":
    for row in bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
        print(row)
