"""The CPU quality ablation, measured by the pipeline itself and repeated over seeds: one
`dvc exp run -S ...` per (recipe change, seed) on tiny shakespeare, in a throw-away clone of this
repository's HEAD.

Each row adds one change to the recipe of the rows before it (rows marked `instead` are
alternatives tried on top of the recipe so far, not carried on). Every row runs with each seed
(`train.seed`); the table gives the mean and standard deviation of the held-out loss, the mean
wall time of the whole `dvc exp run` (download to sample), the copy metrics of the samples, and
the change against the recipe the row was added to. A change counts as a gain (or a loss) only
when it exceeds two standard errors of the difference of the two means; otherwise it is noise.
Needs a quiet machine: the runs are timed.

    .venv/bin/python bench/quality.py                          # every row, 3 seeds: see BENCHMARKS.md for the time
    .venv/bin/python bench/quality.py --rows plain,offset --seeds 1
    .venv/bin/python bench/quality.py --rows clip,decay --out bench/results/quality/clip-decay
    .venv/bin/python bench/quality.py --from bench/results/quality/*/   # one table from runs kept by --out

A row is compared with the carried row just before it in ROWS; when that row is not in the table
(left out by --rows, or not among the --from runs) the comparison column stays empty.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, TINY, load, machine, now

SEEDS = (1, 2, 3)
# (name, label, carried on, overrides); each row's overrides are added to those of every
# carried row before it
ROWS = [
    ("plain", "GRU-512, fixed windows, constant rate, no clipping", True,
     {"train.epochs": "12", "train.random_offset": "false", "train.schedule": "constant",
      "train.warmup_steps": "0", "train.clipnorm": "0"}),
    ("offset", "+ fresh random offset each epoch", True, {"train.random_offset": "true"}),
    ("schedule", "+ cosine decay after warm-up", True, {"train.schedule": "cosine", "train.warmup_steps": "200"}),
    ("clip", "+ global gradient clipping (params.yaml's recipe, 12 epochs)", True, {"train.clipnorm": "1.0"}),
    ("decay", "+ AdamW weight decay 0.5", True, {"train.weight_decay": "0.5"}),
    ("longer", "+ 26 epochs (the CPU recipe)", True, {"train.epochs": "26"}),
]
ROW_NAMES = [row[0] for row in ROWS]


def run_one(clone: Path, name: str, overrides: dict, log: Path, env: dict) -> float:
    args = ["dvc", "exp", "run", "--force", "-n", name]
    for key, value in overrides.items():
        args += ["-S", f"{key}={value}"]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(args, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:  # the log may sit in the clone's temporary directory: show its end
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        sys.exit(f"{tail}\nrun {name} failed (exit {done.returncode}); the end of its output is above")
    return seconds


def metrics(clone: Path) -> dict:
    held = json.loads((clone / "metrics/perplexity.json").read_text())
    train = json.loads((clone / "metrics/train.json").read_text())
    copying = json.loads((clone / "metrics/samples.json").read_text())
    return {"loss": held["loss"], "bpc": held["bpc"], "best_epoch": train["best_epoch"], "epochs": train["epochs"],
            "copied_frac_20": copying["copied_frac_20"], "longest_copied": copying["longest_copied"]}


def summary(runs: list[dict]) -> dict:
    losses = [r["loss"] for r in runs]
    return {"n": len(runs), "mean": statistics.fmean(losses),
            "sd": statistics.stdev(losses) if len(losses) > 1 else float("nan"),
            "seconds": statistics.fmean(r["seconds"] for r in runs),
            "copied_frac_20": statistics.fmean(r["copied_frac_20"] for r in runs),
            "longest_copied": statistics.fmean(r["longest_copied"] for r in runs),
            "best_epochs": "/".join(str(r["best_epoch"]) for r in runs)}


def verdict(row: dict, base: dict | None) -> str:
    """The change against `base`, called a gain or a loss only beyond two standard errors."""
    if base is None:
        return ""
    diff = row["mean"] - base["mean"]
    se = math.sqrt(row["sd"] ** 2 / row["n"] + base["sd"] ** 2 / base["n"])
    if math.isnan(se):
        return f"{diff:+.4f} (one seed: cannot tell from noise)"
    word = "gain" if diff < -2 * se else "worse" if diff > 2 * se else "noise"
    return f"{diff:+.4f} ± {2 * se:.4f}: {word}"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def table(results: list[dict]) -> str:
    head = ["configuration (`-S` overrides on the row before)", "seeds", "held-out nats (mean ± sd)", "bits/char",
            "whole `dvc exp run`", "best epochs", "copied 20-grams", "longest copy", "vs the recipe before"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        sets = " ".join(f"`-S {k}={v}`" for k, v in r["overrides"].items())
        lines.append(f"| {'instead: ' if not r['keep'] else ''}{r['label']}: {sets} | {r['n']} | "
                     f"{r['mean']:.4f} ± {r['sd']:.4f} | {r['mean'] / math.log(2):.4f} | {minutes(r['seconds'])} | "
                     f"{r['best_epochs']} | {r['copied_frac_20']:.1%} | {r['longest_copied']:.0f} | {r['verdict']} |")
    return "\n".join(lines)


def kept_runs(folders: list[Path]) -> dict[str, list[dict]]:
    """The runs that `--out` kept (`<row>-seed<n>.json`), by row name."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(p for folder in folders for p in folder.glob("*-seed*.json")):
        name = path.stem.rsplit("-seed", 1)[0]
        if name not in ROW_NAMES:
            sys.exit(f"{path}: no ablation row is called {name!r}; the rows are {ROW_NAMES}")
        runs.setdefault(name, []).append(json.loads(path.read_text()))
    if not runs:
        sys.exit(f"no kept runs (<row>-seed<n>.json) in {', '.join(map(str, folders))}")
    return runs


def ablation(runs: dict[str, list[dict]]) -> list[dict]:
    """The table's rows, in ROWS order, each compared with the carried row just before it."""
    results, base = [], None
    for name, label, keep, change in ROWS:
        row = None
        if name in runs:
            row = {"name": name, "label": label, "keep": keep, "overrides": change, **summary(runs[name])}
            row["verdict"] = verdict(row, base)
            results.append(row)
        if keep:
            base = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=TINY, help="tiny shakespeare (default: %(default)s)")
    parser.add_argument("--rows", default=",".join(ROW_NAMES),
                        help="comma-separated row names, in order (default: all)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per row (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also keep each run's log and metrics here")
    parser.add_argument("--from", dest="kept", type=Path, nargs="+", metavar="DIR",
                        help="run nothing: print the table of the runs kept by --out in these folders")
    args = parser.parse_args()
    if args.kept:
        print(table(ablation(kept_runs(args.kept))))
        return
    if not args.corpus.is_file():
        sys.exit(f"no corpus at {args.corpus}: pass --corpus with the path of tinyshakespeare.txt")
    wanted = args.rows.split(",")
    unknown = set(wanted) - set(ROW_NAMES)
    if unknown:
        sys.exit(f"unknown rows {sorted(unknown)}; the rows are {ROW_NAMES}")
    seeds = list(range(1, args.seeds + 1))

    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", CHARRNN_TRACKING="0")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    print(f"# CPU quality ablation\n\n{machine()}; {now()}; load before: {load()}\n"
          f"corpus {args.corpus}, seeds {seeds}, commit {commit}\n", flush=True)
    kept, runs, started = {"data.source": str(args.corpus.resolve())}, {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="charrnn-quality-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        logs = args.out or Path(tmp) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, _, keep, change in ROWS:
            overrides = {**kept, **change}
            if keep:
                kept = overrides
            if name not in wanted:
                continue
            for seed in seeds:
                run_name = f"{name}-seed{seed}"
                seconds = run_one(clone, run_name, {**overrides, "train.seed": str(seed)}, logs / f"{run_name}.log", env)
                run = {"seed": seed, "seconds": seconds, **metrics(clone)}
                runs.setdefault(name, []).append(run)
                print(f"{run_name}: {minutes(seconds)}, held-out {run['loss']:.4f} nats, best epoch "
                      f"{run['best_epoch']}, copied {run['copied_frac_20']:.1%}, load {load()}", flush=True)
                if args.out:
                    (args.out / f"{run_name}.json").write_text(json.dumps(run, indent=2) + "\n")
                    shutil.copy(clone / "metrics/history.csv", args.out / f"{run_name}-history.csv")
    print(f"\n{table(ablation(runs))}\n\n{len(runs)} row(s) x {len(seeds)} seed(s) in "
          f"{minutes(time.perf_counter() - started)}; load after: {load()}")


if __name__ == "__main__":
    main()
