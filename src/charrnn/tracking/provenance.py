"""Where a run came from: the git commit and whether the code and params differed from it, the
DVC experiment it ran in, and the CPU it ran on. For the tracking store only, never for
DVC-tracked outputs.
"""
from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

from charrnn.core import files, isa, paths
from charrnn.core.redact import redact

CORPUS_TAG = "charrnn.corpus"  # "<name> <first 8 digits of the content hash>": runs of a corpus together
CORPUS_HASH_TAG = "charrnn.corpus_hash"  # the whole sha256 of data/raw/corpus.txt


def run_tags(root: Path) -> dict[str, str]:
    """Every provenance tag a new run starts with."""
    return {**git_tags(root), **dvc_tags(), **machine_tags()}


def git_tags(root: Path) -> dict[str, str]:
    """charrnn.git_commit, and charrnn.git_dirty: whether any file but the pipeline's own outputs
    (dvc.lock, data/, metrics/, mlruns/) differs from the commit or is new; nothing outside a
    git repository. The outputs change while the pipeline runs; everything else stays as it
    was when the first stage started, so this answers for the run as a whole."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    excluded = [f":(exclude){p}" for p in paths.PIPELINE_OUTPUTS]
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=all", "--", ".", *excluded))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"charrnn.git_commit": commit, "charrnn.git_dirty": str(dirty).lower()}


def dvc_tags() -> dict[str, str]:
    """The DVC experiment this process runs in, from the variables `dvc exp run` sets."""
    names = {"DVC_EXP_NAME": "charrnn.dvc_exp_name", "DVC_EXP_BASELINE_REV": "charrnn.dvc_exp_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def machine_tags() -> dict[str, str]:
    """The CPU model, its instruction-set flags and the kernel pins in effect (charrnn.core.isa):
    what to compare first when a model's bytes differ between two machines."""
    return isa.describe()


def corpus_name(source: str) -> str:
    """A short name for data.source: a preset's name, a URL's file name, env:NAME, or a local
    path without its leading corpora/ (no credentials: a URL's query is never part of it)."""
    if "://" in source:
        return redact(urllib.parse.unquote(urllib.parse.urlsplit(source).path.rstrip("/").rpartition("/")[2])) or "url"
    return source.removeprefix("./").removeprefix("corpora/")


def corpus_tags(root: Path, params) -> dict[str, str]:
    """charrnn.corpus and charrnn.corpus_hash of the corpus the download stage wrote under `root`
    (nothing when there is none yet). bpc compares only within one corpus: these group runs and
    model versions by it."""
    corpus = root / paths.CORPUS
    if not corpus.is_file():
        return {}
    digest = files.sha256_file(corpus)
    return {CORPUS_TAG: corpus_label(params.data.source, digest), CORPUS_HASH_TAG: digest}


def corpus_label(source: str, digest: str) -> str:
    return f"{corpus_name(source)} {digest[:8]}"
