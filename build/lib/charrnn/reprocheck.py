"""The reproducibility check: run the pipeline twice from nothing and compare every output hash.

    python -m charrnn.reprocheck            (or: make repro-check)

Two copies of this working tree are made, each with its own git repository, DVC cache and MLflow
store, set to a tiny configuration on a generated corpus. Each runs `dvc repro`; then the outputs
recorded in the two dvc.lock files are compared, file by file inside directory outputs, and every
difference is named with its stage. Exit status 0 when all match, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn.core.params import parse_yaml, with_changes


# Wall-clock measurements: tracked so that `dvc plots` can draw them, never reproducible.
VOLATILE = {"metrics/throughput.csv"}

TINY = {
    "seq_length": 32,
    "data": {"source": "corpus-src.txt", "val_fraction": 0.1},
    "train": {"embedding_dim": 16, "units": 32, "epochs": 2, "batch_size": 16, "learning_rate": 0.01, "warmup_steps": 10},
    "sample": {"num_chars": 40, "prompts": ["ROMEO:", "JULIET:"]},
    "evaluate": {"batch_size": 8},
}


class Mismatch(Exception):
    pass


def synthetic_corpus(n_chars: int, seed: int = 0) -> str:
    """Generated text in the tiny-shakespeare layout: SPEAKER: lines, speeches, blank lines."""
    rng = random.Random(seed)
    speakers = ["ROMEO", "JULIET", "NURSE", "MERCUTIO", "First Citizen"]
    words = "the and of to my thou thee love night day sweet death light fair hath not be is".split()
    out, size = [], 0
    while size < n_chars:
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize() + rng.choice(",.;!?")
                 for _ in range(rng.randint(1, 4))]
        block = f"{rng.choice(speakers)}:\n" + "\n".join(lines) + "\n\n"
        out.append(block)
        size += len(block)
    return "".join(out)[:n_chars]


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def project_files(source: Path) -> list[str]:
    """The working tree as git sees it: tracked files plus untracked ones it does not ignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=source, capture_output=True, check=True).stdout.decode().split("\0")
    skip = ("data/", "metrics/", "dvc.lock")  # outputs: each copy must make its own
    return [f for f in listed if f and not f.startswith(skip) and (source / f).is_file()]


def copy_project(source: Path, dest: Path, overrides: dict, corpus_text: str, env: dict) -> Path:
    for rel in project_files(source):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest / rel)
    venv = source / ".venv"
    (dest / ".venv").symlink_to(venv.resolve() if venv.exists() else Path(sys.prefix))
    (dest / "corpus-src.txt").write_text(corpus_text, encoding="utf-8")
    params = dest / "params.yaml"
    params.write_text(with_changes(params.read_text(encoding="utf-8"), overrides), encoding="utf-8")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "repro-check copy"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def dvc(root: Path, env: dict, *args: str) -> str:
    exe = Path(sys.prefix) / "bin" / "dvc"
    proc = subprocess.run([str(exe), *args], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {root}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def lock_outputs(root: Path) -> dict[tuple[str, str], str]:
    """{(stage, path): md5} for every output in dvc.lock; directories expanded file by file."""
    lock = parse_yaml((root / "dvc.lock").read_text(encoding="utf-8"), "dvc.lock")
    out = {}
    for stage, body in lock["stages"].items():
        for entry in body.get("outs", []):
            md5 = entry["md5"]
            if md5.endswith(".dir"):
                listing = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                for item in json.loads(listing.read_text()):
                    out[(stage, f"{entry['path']}/{item['relpath']}")] = item["md5"]
            else:
                out[(stage, entry["path"])] = md5
    return out


def compare(a: dict, b: dict) -> list[str]:
    problems = []
    for key in sorted(set(a) | set(b)):
        stage, path = key
        if path in VOLATILE:
            continue
        if key not in a or key not in b:
            problems.append(f"stage '{stage}': {path} exists in only one run")
        elif a[key] != b[key]:
            problems.append(f"stage '{stage}': {path} differs ({a[key][:8]} vs {b[key][:8]})")
    return problems


def check(source: Path, workdir: Path, overrides: dict | None = None, target: str | None = None,
          corpus_chars: int = 40_000) -> list[str]:
    """Run the pipeline in two fresh copies of `source`; return the differences (empty: reproducible)."""
    env = {**os.environ, "CHARRNN_TRACKING": os.environ.get("CHARRNN_TRACKING", "1"),
           "GIT_AUTHOR_NAME": "repro-check", "GIT_AUTHOR_EMAIL": "repro@check", "GIT_COMMITTER_NAME": "repro-check",
           "GIT_COMMITTER_EMAIL": "repro@check"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy logs to its own store under its own mlruns/
    corpus = synthetic_corpus(corpus_chars)
    roots = []
    for name in ("run-a", "run-b"):
        root = copy_project(source, workdir / name, merge(TINY, overrides or {}), corpus, env)
        print(f"repro-check: dvc repro in {root}", flush=True)
        dvc(root, env, "repro", *([target] if target else []))
        status = dvc(root, env, "status", *([target] if target else []))
        if "up to date" not in status:
            raise Mismatch(f"`dvc status` is not clean after `dvc repro` in {root}:\n{status}")
        roots.append(root)
    return compare(lock_outputs(roots[0]), lock_outputs(roots[1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m charrnn.reprocheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=Path.cwd(), help="project to check (default: cwd)")
    p.add_argument("--keep", action="store_true", help="keep the two copies for inspection")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="charrnn-repro-"))
    try:
        problems = check(args.source.resolve(), workdir)
    except (Mismatch, RuntimeError) as e:
        print(f"repro-check: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        print("repro-check: FAILED: the two runs differ:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        sys.exit(1)
    print("repro-check: OK: every stage produced byte-identical outputs in both runs "
          f"(not compared, wall-clock measurements: {', '.join(sorted(VOLATILE))})")


if __name__ == "__main__":
    main()
