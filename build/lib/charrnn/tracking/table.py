"""`charrnn runs`: the MLflow runs of a project as one table, best held-out bits per character
first (runs without it last, newest first). The runs come from tracking.search_runs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charrnn.tracking import runs as tracking

if TYPE_CHECKING:
    import pandas as pd

KEY_PARAMS = ("seq_length", "train.cell", "train.layers", "train.units", "train.epochs", "train.learning_rate")
# table order; the first is the sort key
KEY_METRICS = ("held_out_bpc", "held_out_loss", "held_out_perplexity", "copied_frac_20", "copied_frac_50",
               "longest_copied", "val_loss", "loss")
FIXED = ["run_name", "experiment", "status", "start_time"]


def frame(root: Path, experiment: str | None = None) -> "pd.DataFrame":
    """run_name, experiment, status, start_time, the key params plus every param that differs
    between runs, and the KEY_METRICS present. Empty when there are no runs."""
    return table(tracking.search_runs(root, experiment))


def table(runs: list[dict]) -> "pd.DataFrame":
    import pandas as pd

    if not runs:
        return pd.DataFrame()
    df = pd.DataFrame([{**{k: r[k] for k in FIXED},
                        **{f"params.{k}": v for k, v in r["params"].items()},
                        **{f"metrics.{k}": v for k, v in r["metrics"].items()}} for r in runs])
    df["start_time"] = pd.to_datetime(df["start_time"], unit="ms", utc=True)
    if f"metrics.{KEY_METRICS[0]}" in df:  # stable: ties and missing values keep newest first
        df = df.sort_values(f"metrics.{KEY_METRICS[0]}", kind="stable", na_position="last")
    params = sorted(c for c in df.columns if c.startswith("params."))
    shown = [c for c in params if c.removeprefix("params.") in KEY_PARAMS or df[c].nunique(dropna=False) > 1]
    metrics = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in df]
    out = df[FIXED + shown + metrics]
    return out.rename(columns=lambda c: c.removeprefix("params.").removeprefix("metrics."))
