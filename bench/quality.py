"""The CPU quality ablation, measured by the pipeline itself: one `dvc exp run -S ...` per recipe
change on tiny shakespeare, in a throw-away clone of this repository's HEAD.

Each row adds one change to the recipe of the rows before it (the last rows are alternatives,
each on top of the full recipe, not carried on); the table gives the whole `dvc exp run` wall time
(download to evaluate_perplexity), the held-out loss from metrics/perplexity.json and its change
against the recipe it was added to and against the first row. Needs a quiet machine: the rows are timed.

    .venv/bin/python bench/quality.py                      # all rows, ~1 hour on 2 cores
    .venv/bin/python bench/quality.py --rows plain,offset --epochs 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, TINY, load, machine, now

EPOCHS = 12
# each row's overrides are added to those of every kept row before it; rows with keep=False are
# alternatives tried on top of the recipe so far and not carried on
ROWS = [
    ("plain", "fixed windows, constant rate, no clipping", True,
     {"train.random_offset": "false", "train.schedule": "constant",
      "train.warmup_steps": "0", "train.clipnorm": "0"}),
    ("offset", "+ fresh random offset each epoch", True, {"train.random_offset": "true"}),
    ("schedule", "+ cosine decay after warm-up", True, {"train.schedule": "cosine", "train.warmup_steps": "200"}),
    ("clip", "+ global gradient clipping (the default CPU recipe)", True, {"train.clipnorm": "1.0"}),
    ("dropout", "instead: + dropout on embedding and GRU outputs", False, {"train.dropout": "0.2"}),
    ("decay", "instead: + AdamW weight decay", False, {"train.weight_decay": "0.1"}),
]


def run_row(clone: Path, name: str, overrides: dict, log: Path, env: dict) -> float:
    args = ["dvc", "exp", "run", "--force", "-n", name]
    for key, value in overrides.items():
        args += ["-S", f"{key}={value}"]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(args, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:  # the log may sit in the clone's temporary directory: show its end
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        sys.exit(f"{tail}\nrow {name} failed (exit {done.returncode}); the end of its output is above")
    return seconds


def metrics(clone: Path) -> dict:
    held = json.loads((clone / "metrics/perplexity.json").read_text())
    train = json.loads((clone / "metrics/train.json").read_text())
    return {"loss": held["loss"], "bpc": held["bpc"], "best_epoch": train["best_epoch"],
            "epochs": train["epochs"], "train_loss": train["loss"], "val_loss": train["val_loss"]}


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def table(results: list[dict]) -> str:
    head = ["configuration (cumulative `-S` overrides)", "whole `dvc exp run`", "held-out nats",
            "bits/char", "best epoch", "vs the recipe before", "vs first row"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(results):
        sets = " ".join(f"`-S {k}={v}`" for k, v in r["overrides"].items())
        base = next((b for b in reversed(results[:i]) if b["keep"]), None)
        prev = "" if base is None else f"{r['loss'] - base['loss']:+.4f}"
        first = "" if i == 0 else f"{r['loss'] - results[0]['loss']:+.4f}"
        lines.append(f"| {r['label']}: {sets} | {minutes(r['seconds'])} | {r['loss']:.4f} | "
                     f"{r['bpc']:.4f} | {r['best_epoch']} of {r['epochs']} | {prev} | {first} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=TINY, help="tiny shakespeare (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--rows", default=",".join(r[0] for r in ROWS),
                        help="comma-separated row names, in order (default: all)")
    parser.add_argument("--out", type=Path, help="also keep each row's log and metrics here")
    args = parser.parse_args()
    if not args.corpus.is_file():
        sys.exit(f"no corpus at {args.corpus}: pass --corpus with the path of tinyshakespeare.txt")
    wanted = args.rows.split(",")
    unknown = set(wanted) - {r[0] for r in ROWS}
    if unknown:
        sys.exit(f"unknown rows {sorted(unknown)}; the rows are {[r[0] for r in ROWS]}")

    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    print(f"# CPU quality ablation\n\n{machine()}; {now()}; load before: {load()}\n"
          f"corpus {args.corpus}, {args.epochs} epochs, commit {commit}\n", flush=True)
    results, kept = [], {"data.source": str(args.corpus.resolve()), "train.epochs": str(args.epochs)}
    with tempfile.TemporaryDirectory(prefix="charrnn-quality-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        logs = args.out or Path(tmp) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, label, keep, change in ROWS:
            overrides = {**kept, **change}
            if keep:
                kept = overrides
            if name not in wanted:
                continue
            seconds = run_row(clone, name, overrides, logs / f"{name}.log", env)
            row = {"name": name, "label": label, "keep": keep, "overrides": change if results else overrides,
                   "seconds": seconds, **metrics(clone)}
            results.append(row)
            print(f"{name}: {minutes(seconds)}, held-out {row['loss']:.4f} nats, "
                  f"{row['bpc']:.4f} bpc, best epoch {row['best_epoch']}, load {load()}", flush=True)
            if args.out:
                (args.out / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
                shutil.copy(clone / "metrics/history.csv", args.out / f"{name}-history.csv")
    print("\n" + table(results))


if __name__ == "__main__":
    main()
