"""Compile and fit: determinism, callbacks, history.

Per-epoch losses go to the history (a DVC-tracked output, so byte-reproducible); wall-clock
figures (seconds, characters per second) are measurements, kept apart in the throughput table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass

import keras
import pandas as pd
import tensorflow as tf

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.core.params import TrainParams
from charrnn.data import reader
from charrnn.data.vocab import Vocabulary
from charrnn.nn import checkpoint, distribute, network, pools, recipe
from charrnn.nn.history import LOSSES, THROUGHPUT
from charrnn.nn.modeldir import ModelConfig


class TrainingError(CharrnnError, RuntimeError):
    pass


def configure(seed: int, threads: int = 0) -> None:
    """Seeds, deterministic ops and fixed thread pools; call before TensorFlow runs any op."""
    pools.fix(threads)
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


class ReseedEachEpoch(keras.callbacks.Callback):
    """Restart every random layer's seed (dropout) from (seed, epoch) when an epoch begins, so
    its masks depend on the epoch, not on how many epochs this process ran: a resumed training
    draws the masks the uninterrupted one drew."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for i, layer in enumerate(self.model._flatten_layers()):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(keras.ops.convert_to_tensor(
                    [self.seed * 1_000_003 + epoch, i], dtype=generator.state.dtype))


class EpochReport(keras.callbacks.Callback):
    """Times each epoch and hands its metrics (losses, learning rate, seconds, chars/s) to `on_epoch`."""

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
            # the rate the optimizer applies now (a schedule's value after this epoch's steps)
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            timing = {k: v for k, v in row.items() if k != "epoch"}  # the step says which epoch
            metrics = {**{k: float(v) for k, v in (logs or {}).items()}, "learning_rate": rate, **timing}
            self.on_epoch(epoch + 1, metrics)


@dataclass
class Result:
    model: network.CharRNN
    history: pd.DataFrame  # epoch, loss, val_loss: deterministic
    throughput: pd.DataFrame  # epoch, seconds, chars_per_sec: wall-clock measurements
    summary: dict
    checkpoints: checkpoint.EpochCheckpoints


def build_model(params: TrainParams, vocab: Vocabulary, total_steps: int = 1) -> network.CharRNN:
    """The compiled model `train` fits (bench/ times this same model); `total_steps` sizes the
    learning-rate schedule. On a CPU its GRU runs fastgru's fused loop (train.rnn_impl); mixed
    precision applies on a GPU only. With train.softmax adaptive, the clusters come from the
    vocabulary's counts (charrnn.adaptive) and fit's steps take the loss from CharRNN.mean_nll
    instead of the compiled loss, which then serves only the full softmax."""
    model = network.build(ModelConfig.from_params(params, vocab), rnn_impl=params.rnn_impl,
                            policy=network.policy(params.mixed_precision))
    model.compile(  # under mixed_float16, Keras wraps the optimizer in a LossScaleOptimizer
        optimizer=recipe.optimizer(params, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def train(params: TrainParams, records_dir: str, vocab: Vocabulary, on_epoch=None,
          backup_dir: str | None = None, parent: network.CharRNN | None = None, parent_hash: str = "") -> Result:
    """Fit a new model on the records; `on_epoch(epoch, metrics)` is called after each epoch.
    With `backup_dir`, every epoch is backed up there and a killed training resumes from it
    (see charrnn.checkpoint); clear it with `result.checkpoints.clear()` once outputs are saved.
    With `parent` (of content hash `parent_hash`), the model starts from its weights
    (network.grow_from): fine-tuning; `params` then hold the parent's architecture (charrnn.nn.lineage)."""
    meta = reader.load_meta(records_dir)
    if meta.vocab_fingerprint != vocab.fingerprint:
        raise TrainingError(f"{records_dir} was made with another vocabulary: run `dvc repro make_tfrecords`")
    strategy = distribute.strategy(params.distribute)  # first: before the datasets' ops
    if strategy.num_replicas_in_sync > 1:
        print(f"training on {distribute.describe(strategy)}", flush=True)
    if reader.window_count(meta, "train", params.random_offset) < 1:
        raise TrainingError(f"the training text makes only {meta.train_windows} window(s) of {meta.seq_length + 1} "
                            "characters; train.random_offset needs at least two per shard: set "
                            "train.random_offset: false, lower seq_length, or give more text")
    steps_per_epoch = reader.batches_per_epoch(records_dir, "train", params.batch_size, params.random_offset)
    with strategy.scope():
        model = build_model(params, vocab, total_steps=steps_per_epoch * params.epochs)
        if parent is not None:
            network.grow_from(model, parent)
    checkpoints = checkpoint.EpochCheckpoints(backup_dir, training_key(params, records_dir, parent_hash),
                                              params.patience, params.restore_best)
    first = checkpoints.resume(model)
    if first:
        print(f"resuming after epoch {first} of {params.epochs} (backup in {backup_dir})", flush=True)
    report = EpochReport(meta.train_windows * meta.seq_length, on_epoch)
    if checkpoints.finished(params.epochs):  # killed after its last epoch, before the outputs
        checkpoints.set_model(model)
        checkpoints.on_train_end()
    else:
        train_ds = reader.dataset(records_dir, "train", params.batch_size, shuffle_seed=params.seed,
                                   epochs=params.epochs, first_epoch=first, random_offset=params.random_offset)
        val_ds = reader.dataset(records_dir, "val", params.batch_size)
        if distribute.is_multi_worker(strategy):
            train_ds, val_ds = distribute.shard_by_data(train_ds), distribute.shard_by_data(val_ds)
            distribute.fit_under_multi_worker(model, strategy, next(iter(val_ds)))
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=params.epochs,
            initial_epoch=first,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # the dataset is already shuffled, with a seed
            callbacks=[ReseedEachEpoch(params.seed), StopOnNaN(), report, checkpoints],
            verbose=1 if sys.stdout.isatty() else 2,  # progress bar on a terminal, a line per epoch in logs
        )
    history = pd.DataFrame(checkpoints.rows, columns=LOSSES)
    kept = checkpoints.model_epoch
    summary = {
        "epochs": int(len(history)),
        "best_epoch": int(checkpoints.best_epoch),
        "model_epoch": int(kept),
        "loss": float(history["loss"].iloc[kept - 1]),
        "val_loss": float(history["val_loss"].iloc[kept - 1]),
        "parameters": int(model.count_params()),
        "train_chars_per_epoch": meta.train_windows * meta.seq_length,
    }
    return Result(model, history, pd.DataFrame(report.rows, columns=THROUGHPUT),
                  summary, checkpoints)


def training_key(params: TrainParams, records_dir: str, parent_hash: str = "") -> str:
    """What a backup must match to be resumed: every train param, the records' content and the
    parent model's (fine-tuning)."""
    key = {"params": dataclasses.asdict(params), "records": files.sha256_tree(records_dir)}
    text = json.dumps({**key, "parent": parent_hash} if parent_hash else key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def environment_tags() -> dict:
    """What this run ran on, for the tracking store (never for DVC-tracked outputs)."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return {"charrnn.tensorflow_version": tf.__version__, "charrnn.device": ", ".join(names) or "CPU"}
