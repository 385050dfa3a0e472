"""Compile and fit: determinism, callbacks, history.

Per-epoch losses go to the history (a DVC-tracked output, so byte-reproducible); wall-clock
figures (seconds, characters per second) are measurements, kept apart in the throughput table.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import keras
import pandas as pd
import tensorflow as tf

from charrnn import model as model_lib
from charrnn import records
from charrnn.params import TrainParams
from charrnn.vocab import Vocabulary


class TrainingError(RuntimeError):
    pass


def configure(seed: int, threads: int = 0) -> None:
    """Seeds, deterministic ops and fixed thread pools; call before TensorFlow runs any op."""
    n = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        # TensorFlow already ran an op in this process (tests, notebooks): its pools are fixed
        # for the process already; stages call configure() first, so this never happens there.
        pass
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class StopOnNaN(keras.callbacks.Callback):
    """Stop with an error naming the epoch and batch where the loss stopped being finite."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise TrainingError(
                f"training loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}: "
                "lower train.learning_rate; no model was written"
            )


class EpochReport(keras.callbacks.Callback):
    """Times each epoch and hands its metrics (losses, seconds, chars/s) to `on_epoch`."""

    def __init__(self, chars_per_epoch: int, on_epoch=None):
        super().__init__()
        self.chars_per_epoch = chars_per_epoch
        self.on_epoch = on_epoch
        self.rows: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        row = {"epoch": epoch + 1, "seconds": seconds, "chars_per_sec": self.chars_per_epoch / seconds}
        self.rows.append(row)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, {**{k: float(v) for k, v in (logs or {}).items()}, **row})


@dataclass
class Result:
    model: model_lib.CharRNN
    history: pd.DataFrame  # epoch, loss, val_loss: deterministic
    throughput: pd.DataFrame  # epoch, seconds, chars_per_sec: wall-clock measurements
    summary: dict


def build_model(params: TrainParams, vocab: Vocabulary) -> model_lib.CharRNN:
    """The compiled model `train` fits (bench/ times this same model). On a CPU its GRU runs
    fastgru's fused loop (train.rnn_impl); mixed precision applies on a GPU only."""
    model = model_lib.build(model_lib.ModelConfig.from_params(params, vocab), rnn_impl=params.rnn_impl,
                            policy=model_lib.policy(params.mixed_precision))
    model.compile(  # under mixed_float16, Keras wraps the optimizer in a LossScaleOptimizer
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def train(params: TrainParams, records_dir: str, vocab: Vocabulary, on_epoch=None) -> Result:
    """Fit a new model on the records; `on_epoch(epoch, metrics)` is called after each epoch."""
    meta = records.RecordsMeta.load(records_dir)
    if meta.vocab_fingerprint != vocab.fingerprint:
        raise TrainingError(f"{records_dir} was made with another vocabulary: run `dvc repro make_tfrecords`")
    train_ds = records.dataset(records_dir, "train", params.batch_size, shuffle_seed=params.seed)
    val_ds = records.dataset(records_dir, "val", params.batch_size)

    model = build_model(params, vocab)
    report = EpochReport(meta.train_windows * meta.seq_length, on_epoch)
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=params.epochs,
        shuffle=False,  # the dataset is already shuffled, with a seed
        callbacks=[StopOnNaN(), report],
        verbose=1 if sys.stdout.isatty() else 2,  # progress bar on a terminal, a line per epoch in logs
    )
    history = pd.DataFrame({"epoch": range(1, len(fit.history["loss"]) + 1),
                            "loss": fit.history["loss"], "val_loss": fit.history["val_loss"]})
    summary = {
        "epochs": int(len(history)),
        "loss": float(history["loss"].iloc[-1]),
        "val_loss": float(history["val_loss"].iloc[-1]),
        "parameters": int(model.count_params()),
        "train_chars_per_epoch": meta.train_windows * meta.seq_length,
    }
    return Result(model, history, pd.DataFrame(report.rows), summary)


def environment_tags() -> dict:
    """What this run ran on, for the tracking store (never for DVC-tracked outputs)."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return {"charrnn.tensorflow_version": tf.__version__, "charrnn.device": ", ".join(names) or "CPU"}
