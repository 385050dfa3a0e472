"""Data stages on a big generated corpus: download (from a local file), build_vocab, make_tfrecords:
MB/s of each and of the three, peak memory, and the size of the records against the text's.

Each stage runs as the real DVC stage script (stages/<name>.py) in a scratch project directory,
as its own process: the wall time includes starting Python and importing what the stage imports,
and the peak resident memory is the process's own (os.wait4's ru_maxrss). MB/s is always the
corpus's size (MB = 10^6 bytes) over the time. `python bench/data_stages.py MB [SCRATCH_DIR]`
runs it alone (SCRATCH_DIR: where the scratch project goes, default the system's temp folder).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, generated_text

from charrnn.core.params import with_changes


PIECES = 16  # distinct 8 MiB pieces of generated text; a bigger corpus repeats them (the stages' speed does not depend on it)


def write_corpus(path: Path, mb: int) -> int:
    """mb MiB of generated text, written in 8 MiB pieces (different seeds, the first PIECES of them
    generated, then repeated in turn) to keep this process small and 10 GB quick to write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    piece, made = 8 << 20, {}
    with open(path, "wb") as f:
        for n, i in enumerate(range(0, mb << 20, piece)):
            size = min(piece, (mb << 20) - i)
            if size < piece or n < PIECES:
                text = generated_text(size, seed=i).encode("ascii")
                made.setdefault(n % PIECES, text)
            else:
                text = made[n % PIECES]
            f.write(text)
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


STAGES = ("download", "build_vocab", "make_tfrecords")


def bench(mb: int = 200, scratch_dir: str | None = None) -> list[dict]:
    """download (from a local file) -> build_vocab -> make_tfrecords on `mb` MiB of text."""
    scratch = Path(tempfile.mkdtemp(prefix="charrnn-bench-data-", dir=scratch_dir))
    try:
        text = with_changes((REPO / "params.yaml").read_text(encoding="utf-8"), {"data": {"source": "source.txt"}})
        (scratch / "params.yaml").write_text(text, encoding="utf-8")
        shutil.copyfile(REPO / "dvc.yaml", scratch / "dvc.yaml")  # the stages look for the project root
        # in a child process: a stage's peak RSS (ru_maxrss) counts this process's memory at the fork
        subprocess.run([sys.executable, __file__, "--write-corpus", str(scratch / "source.txt"), str(mb)], check=True)
        size = (scratch / "source.txt").stat().st_size
        (scratch / "metrics").mkdir()
        results = {}
        for name in STAGES:
            results[name] = run_stage(name, scratch)
            if name == "download":  # only the corpus the stage wrote is read from here on
                (scratch / "source.txt").unlink()
        corpus_bytes = (scratch / "data" / "raw" / "corpus.txt").stat().st_size
        records_bytes = sum(p.stat().st_size for p in (scratch / "data" / "records").iterdir())
        dtype = json.loads((scratch / "data" / "records" / "meta.json").read_text())["dtype"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mb_ = size / 1e6
    rows = [{"row": f"data: {name} ({mb_:.0f} MB corpus)", "ours": mb_ / s, "unit": "MB/s",
             "note": f"{s:.1f} s, peak RSS {r / 2**20:.0f} MiB"} for name, (s, r) in results.items()]
    seconds = sum(s for s, _ in results.values())
    peak = max(r for _, r in results.values())
    rows.append({"row": f"data: download + build_vocab + make_tfrecords ({mb_:.0f} MB)", "ours": mb_ / seconds,
                 "unit": "MB/s", "target": ">= 40 MB/s", "met": mb_ / seconds >= 40, "note": f"{seconds:.1f} s"})
    rows.append({"row": "data: peak RSS of the three stages", "ours": peak / 2**20, "unit": "MiB",
                 "target": "< 1024 MiB", "met": peak < 1 << 30})
    rows.append({"row": "data: records / text (bytes)", "ours": records_bytes / corpus_bytes, "unit": "x",
                 "target": "<= 1.001 (framing)", "met": records_bytes <= corpus_bytes * 1.001,
                 "note": f"{records_bytes / corpus_bytes:.4f}x: {records_bytes / 1e6:,.1f} MB of records ({dtype} ids, meta.json included) for "
                         f"{corpus_bytes / 1e6:,.1f} MB of corpus.txt"})
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-corpus"]:
        write_corpus(Path(sys.argv[2]), int(sys.argv[3]))
        sys.exit()
    for row in bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200, sys.argv[2] if len(sys.argv) > 2 else None):
        print(row)
