"""`charrnn runs`: the MLflow runs of a project as one table, grouped by corpus and ranked within
it, best held-out bits per character first (bits per character compare only on one text: a
Shakespeare run's 1.9 and a Chinese novel's 5.2 are not better and worse). Runs without a held-out
bpc come last in their corpus, newest first. The runs come from tracking.search_runs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charrnn.tracking import runs as tracking
from charrnn.tracking import ui
from charrnn.tracking.provenance import CORPUS_HASH_TAG, CORPUS_TAG, corpus_label

if TYPE_CHECKING:
    import pandas as pd

KEY_PARAMS = ("seq_length", "train.cell", "train.layers", "train.units", "train.epochs", "train.learning_rate")
# table order; the first is the sort key
KEY_METRICS = ("held_out_bpc", "held_out_loss", "held_out_perplexity", "copied_frac_20", "copied_frac_50",
               "longest_copied", "val_loss", "loss")
FIXED = ["corpus", "rank", "run_name", "experiment", "status", "start_time"]
UNKNOWN_CORPUS = "?"  # a run logged before runs were tagged with their corpus


def frame(root: Path, experiment: str | None = None, corpus: str | None = None) -> "pd.DataFrame":
    """corpus, rank (within the corpus), run_name, experiment, status, start_time, the key params
    plus every param that differs between runs, and the KEY_METRICS present. Empty when there are
    no runs. `corpus`: only the runs whose corpus name or content hash starts with it."""
    return table(tracking.search_runs(root, experiment), corpus)


def ui_links(root: Path, runs: list[dict]) -> list[str]:
    """The MLflow UI's page of the runs of each experiment of `runs` (tracking.search_runs),
    opened on charrnn's view (tracking.ui)."""
    base = ui.ui_base(tracking.tracking_uri(root))
    ids = sorted({r["experiment_id"] for r in runs}, key=lambda i: (len(i), i))
    return [ui.runs_url(base, i) for i in ids]


def corpus_of(tags: dict) -> tuple[str, str]:
    """(the key runs are grouped by, the label shown): the corpus's content hash and its name."""
    digest = tags.get(CORPUS_HASH_TAG, "")
    label = tags.get(CORPUS_TAG) or (corpus_label("", digest).strip() if digest else UNKNOWN_CORPUS)
    return digest or label, label


def _matches(wanted: str, tags: dict) -> bool:
    key, label = corpus_of(tags)
    return label.startswith(wanted) or key.startswith(wanted) or wanted in label.split()


def table(runs: list[dict], corpus: str | None = None) -> "pd.DataFrame":
    import pandas as pd

    if corpus:
        runs = [r for r in runs if _matches(corpus, r["tags"])]
    if not runs:
        return pd.DataFrame()
    df = pd.DataFrame([{**dict(zip(("corpus_key", "corpus"), corpus_of(r["tags"]))),
                        **{k: r[k] for k in FIXED if k in r},
                        **{f"params.{k}": v for k, v in r["params"].items()},
                        **{f"metrics.{k}": v for k, v in r["metrics"].items()}} for r in runs])
    df["start_time"] = pd.to_datetime(df["start_time"], unit="ms", utc=True)
    bpc = f"metrics.{KEY_METRICS[0]}"
    if bpc not in df:
        df[bpc] = float("nan")
    # stable sorts: ties and missing values keep newest first; then each corpus's runs together,
    # the corpora in the order of their best runs
    df = df.sort_values(bpc, kind="stable", na_position="last")
    df = df.assign(_group=pd.factorize(df["corpus_key"])[0]).sort_values("_group", kind="stable")
    ranks = df.groupby("corpus_key")[bpc].rank(method="min")
    df["rank"] = ["-" if pd.isna(r) else str(int(r)) for r in ranks]  # "-": not evaluated
    params = sorted(c for c in df.columns if c.startswith("params."))
    shown = [c for c in params if c.removeprefix("params.") in KEY_PARAMS or df[c].nunique(dropna=False) > 1]
    metrics = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in df and df[f"metrics.{m}"].notna().any()]
    out = df[FIXED + shown + metrics].reset_index(drop=True)
    return out.rename(columns=lambda c: c.removeprefix("params.").removeprefix("metrics."))
