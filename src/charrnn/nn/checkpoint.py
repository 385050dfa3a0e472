"""Training that survives being killed, and keeps its best epoch.

After every epoch `EpochCheckpoints` saves the weights with the optimizer state (step count,
Adam moments) under a backup directory, together with the per-epoch history and the best epoch
so far. A training started again with the same key (params + records) resumes after the last
saved epoch instead of from zero; because the batches of an epoch depend only on (seed, epoch)
(charrnn.data.reader.dataset), the resumed run ends with the same model as an uninterrupted one.

Every file is written under a temporary name and renamed, and state.json, renamed last, names
the weights it belongs to: a kill at any instant leaves the previous consistent backup.
The backup lives outside DVC's outputs (DVC deletes those before re-running a stage) and is
removed once the stage has written its outputs.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import keras

from charrnn.core import files

STATE = "state.json"


class EpochCheckpoints(keras.callbacks.Callback):
    """Per-epoch history, best epoch (early stopping by `patience`, best weights restored at the
    end when `restore_best`), and, when `backup_dir` is given, a resumable backup."""

    def __init__(self, backup_dir: str | Path | None, key: str, patience: int = 0, restore_best: bool = True):
        super().__init__()
        self.dir = Path(backup_dir) if backup_dir else None
        self.key, self.patience, self.restore_best = key, patience, restore_best
        self.rows: list[dict] = []
        self.best_epoch, self.best_val, self._best_weights = 0, math.inf, None

    def resume(self, model: keras.Model) -> int:
        """Restore the backup for this key into `model` (built and compiled); the number of
        epochs already done (0 when there is nothing to resume)."""
        state = self._read_state()
        if state is None or state.get("key") != self.key:
            self.clear()  # nothing, or a backup of another training
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        if state["best_epoch"]:
            model.load_weights(self.dir / state["best_weights"])
            self._best_weights = model.get_weights()
        model.load_weights(self.dir / state["weights"])
        self.rows, self.best_epoch, self.best_val = state["rows"], state["best_epoch"], state["best_val"]
        return state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": float(logs["val_loss"])})
        improved = self.rows[-1]["val_loss"] < self.best_val
        if improved:
            self.best_epoch, self.best_val = epoch + 1, self.rows[-1]["val_loss"]
            self._best_weights = self.model.get_weights()
        if self.dir is not None:
            self._save(epoch + 1, improved)
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best and self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    def finished(self, epochs: int) -> bool:
        """Whether the restored training had already run its course (all epochs, or stopped early)."""
        done = len(self.rows)
        return done >= epochs or bool(self.patience and done and done - self.best_epoch >= self.patience)

    @property
    def model_epoch(self) -> int:
        """The epoch whose weights the model holds after training."""
        return self.best_epoch if self.restore_best and self.best_epoch else len(self.rows)

    def clear(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _read_state(self) -> dict | None:
        if self.dir is None or not (self.dir / STATE).is_file():
            return None
        try:
            return files.read_json(self.dir / STATE)
        except (OSError, ValueError):
            return None

    def _save(self, epoch: int, improved: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = self._read_state() or {}
        weights = f"epoch-{epoch:04d}.weights.h5"
        self._save_weights(weights)
        best = f"best-{epoch:04d}.weights.h5" if improved else previous.get("best_weights")
        if improved:
            self._save_weights(best)
        state = {"key": self.key, "epoch": epoch, "weights": weights, "rows": self.rows,
                 "best_epoch": self.best_epoch, "best_val": self.best_val, "best_weights": best}
        tmp = self.dir / f".{STATE}.tmp"
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.dir / STATE)
        for old in self.dir.glob("*.weights.h5"):  # only what state.json names is still needed
            if old.name not in (weights, best):
                old.unlink()

    def _save_weights(self, name: str) -> None:
        tmp = self.dir / f".{name}.tmp.weights.h5"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.dir / name)
