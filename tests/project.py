"""A throw-away copy of the project (git + DVC) for end-to-end tests of the real pipeline."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from charrnn.core.params import parse_yaml
from charrnn.reprocheck import TINY, copy_project, merge, synthetic_corpus

REPO = Path(__file__).resolve().parent.parent
shakespeare_like = synthetic_corpus


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
        return parse_yaml((self.root / "params.yaml").read_text(encoding="utf-8"))

    def set_params(self, overrides: dict) -> None:
        write_params(self.root, overrides, self.params())

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")


def write_params(directory: Path, overrides: dict, base: dict | None = None) -> Path:
    """directory/params.yaml: the project's params (or `base`) with `overrides` merged in."""
    base = base if base is not None else parse_yaml((REPO / "params.yaml").read_text(encoding="utf-8"))
    path = Path(directory) / "params.yaml"
    path.write_text(yaml.safe_dump(merge(base, overrides), allow_unicode=True), encoding="utf-8")
    return path


def make_project(dest: Path, corpus_text: str, overrides: dict | None = None, tracking: bool = False) -> Project:
    """Copy the project into `dest` (own git repo, DVC cache, MLflow store) on a generated corpus."""
    env = {**os.environ, "CHARRNN_TRACKING": "1" if tracking else "0", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dest.mkdir(parents=True, exist_ok=True)
    copy_project(REPO, dest, merge(TINY, overrides or {}), corpus_text, env)
    return Project(dest, env)
