"""A throw-away copy of the project (git + DVC) for end-to-end tests of the real pipeline."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COPIED = ["dvc.yaml", "params.yaml", "stages", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]

# A model small enough to train in seconds on two cores.
TINY = {
    "seq_length": 32,
    "data": {"val_fraction": 0.1},
    "train": {"embedding_dim": 16, "units": 32, "epochs": 2, "batch_size": 16, "learning_rate": 0.01},
    "sample": {"num_chars": 40, "prompts": ["ROMEO:", "JULIET:"]},
    "evaluate": {"batch_size": 8},
}


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


class Project:
    def __init__(self, root: Path, env: dict):
        self.root, self.env = root, env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=self.root, env=self.env, text=True, capture_output=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(Path(sys.prefix) / "bin" / "dvc"), *args, check=check)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", *args)

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, overrides: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(merge(self.params(), overrides), allow_unicode=True))

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")


def make_project(dest: Path, corpus_text: str, overrides: dict | None = None, tracking: bool = False) -> Project:
    """Copy the pipeline into `dest`, point it at a generated corpus, commit, and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    (dest / "corpus-src.txt").write_text(corpus_text, encoding="utf-8")
    env = {**os.environ, "CHARRNN_TRACKING": "1" if tracking else "0", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)
    project = Project(dest, env)
    project.set_params(merge(TINY, {"data": {"source": "corpus-src.txt"}, **(overrides or {})}))
    project.git("init", "-q", "-b", "main")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "test project")
    return project


def shakespeare_like(n_chars: int, seed: int = 0) -> str:
    """Generated text in the tiny-shakespeare layout: SPEAKER: lines, speeches, blank lines."""
    import random

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
