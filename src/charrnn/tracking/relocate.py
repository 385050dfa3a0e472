"""A moved or copied project's store points at its own artifacts again.

MLflow stores every artifact location as an absolute URI (it resolves relative ones when the
experiment is created), so a project copied with its mlruns/ would keep writing artifacts into
the original folder, and a moved one into a folder that is gone. relocate() rewrites the
locations of this project's default store (sqlite:///<root>/mlruns/mlflow.db) that charrnn made
for another root (file://.../mlruns/artifacts) to this root's mlruns/artifacts. A tracking server
or a store named by MLFLOW_TRACKING_URI decides its own locations and is never touched.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from charrnn.core import paths

ARTIFACTS = "artifacts"
# (table, column) of every artifact location MLflow 3 keeps
COLUMNS = [("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
           ("model_versions", "source"), ("model_versions", "storage_location")]


def relocate(db: Path, root: Path) -> list[str]:
    """Rewrite the other roots' artifact locations in `db` to `root`'s; the old prefixes."""
    if not db.is_file() or db.stat().st_size == 0:
        return []
    here = (root / paths.MLRUNS / ARTIFACTS).resolve().as_uri()
    suffix = f"/{paths.MLRUNS}/{ARTIFACTS}"
    with sqlite3.connect(db, timeout=30) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return []
        old = sorted({loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                      if loc and loc.startswith("file://") and loc.endswith(suffix) and loc != here})
        for prefix in old:
            for table, column in COLUMNS:
                if table in tables:
                    con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                f"WHERE substr({column}, 1, ?) = ?", (here, len(prefix) + 1, len(prefix), prefix))
    return old
