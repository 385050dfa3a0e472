"""Fine-tuning against training from scratch, through the real pipeline (README "Fine-tuning").

One throw-away copy of the project (its own git, DVC cache and MLflow store) trains a base model
on --base and registers it as models:/charrnn@base; then, for each --target (its first
--target-kb KB, cut at a character), the same small architecture trains twice for the same
number of epochs: from scratch (train.init_from "") and fine-tuned from the base model. Same
architecture and epochs means the same steps and about the same time (the fine-tuned model's
vocabulary is larger by the base's characters, so it is, if anything, the slower one); both
wall-clock times are reported. Printed: per-epoch val_loss of both, and the held-out loss.

    .venv/bin/python bench/finetune.py --out /tmp/ft-bench \\
        --base ../shared/data/tinyshakespeare.txt \\
        --target ../shared/data/tom_sawyer.txt --target ../shared/data/xiyouji.txt
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from charrnn.reprocheck import copy_project, merge

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.prefix) / "bin"


def run(root: Path, env: dict, *args: str) -> str:
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def head(path: Path, kb: int) -> str:
    return path.read_bytes()[:kb * 1024].decode("utf-8", errors="ignore")


def training(root: Path, env: dict, changes: dict) -> dict:
    """Set params, `dvc repro`, and read what the training and the evaluation measured."""
    params = root / "params.yaml"
    from charrnn.core.params import with_changes

    params.write_text(with_changes(params.read_text(encoding="utf-8"), changes), encoding="utf-8")
    run(root, env, str(BIN / "dvc"), "repro")
    history = list(csv.DictReader(io.StringIO((root / "metrics/history.csv").read_text())))
    seconds = sum(float(r["seconds"]) for r in csv.DictReader(io.StringIO((root / "metrics/throughput.csv").read_text())))
    return {"val_loss": [float(r["val_loss"]) for r in history], "seconds": seconds,
            "held_out": json.loads((root / "metrics/perplexity.json").read_text())["loss"],
            "vocab": json.loads((root / "metrics/vocab.json").read_text())["size"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--target", type=Path, action="append", required=True)
    ap.add_argument("--target-kb", type=int, default=250)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--base-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args()
    env = {**os.environ, "CHARRNN_TRACKING": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    env.pop("MLFLOW_TRACKING_URI", None)
    root = args.out / "project"
    model = {"units": args.units, "embedding_dim": 64, "warmup_steps": 50, "batch_size": 32}
    copy_project(REPO, root, {"data": {"source": "corpus-src.txt"}, "train": {**model, "epochs": args.base_epochs}},
                 args.base.read_text(encoding="utf-8"), env)
    (root / "corpora").mkdir(exist_ok=True)
    base = training(root, env, {})
    print(f"base on {args.base.name}: {args.base_epochs} epochs, {base['seconds']:.0f} s, held-out {base['held_out']:.4f}",
          flush=True)
    run(root, env, str(BIN / "charrnn"), "promote", "1", "--alias", "base")
    results = {"base": {**base, "corpus": args.base.name}}
    for target in args.target:
        (root / "corpora" / target.name).write_text(head(target, args.target_kb), encoding="utf-8")
        common = merge({"data": {"source": f"corpora/{target.name}"}}, {"train": {"epochs": args.epochs}})
        for how, init_from in (("scratch", ""), ("fine-tuned", "models:/charrnn@base")):
            got = training(root, env, merge(common, {"train": {"init_from": init_from}}))
            results[f"{target.name} {how}"] = got
            print(f"{target.name} ({args.target_kb} KB) {how}: {got['seconds']:.0f} s, vocab {got['vocab']}, "
                  f"held-out {got['held_out']:.4f}, val_loss by epoch {[round(v, 4) for v in got['val_loss']]}",
                  flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
