"""The per-epoch training history: its columns and its picture."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

LOSSES = ["epoch", "loss", "val_loss"]  # metrics/history.csv: deterministic
THROUGHPUT = ["epoch", "seconds", "chars_per_sec"]  # metrics/throughput.csv: wall-clock


def loss_figure(history: "pandas.DataFrame"):
    """Training and validation loss per epoch, as a matplotlib Figure (no display needed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for column, label in (("loss", "training"), ("val_loss", "validation")):
        if column in history:
            axes.plot(history["epoch"], history[column], marker="o", label=label)
    axes.set(xlabel="epoch", ylabel="loss (nats per character)", title="charrnn loss")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure
