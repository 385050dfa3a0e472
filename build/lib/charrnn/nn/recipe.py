"""The training recipe around the model: optimizer and learning-rate schedule.

Each piece is a `train.*` param, off by default except where noted:
- train.schedule: `constant`, or `cosine` (decay to COSINE_FLOOR x the peak over the run);
  train.warmup_steps: a linear warm-up from 0 to train.learning_rate first (either schedule);
- train.clipnorm: clip the global gradient norm (0: off);
- train.weight_decay: decoupled weight decay (AdamW) on the kernels and embeddings, not biases;
(train.patience and train.restore_best, early stopping and the best epoch, are charrnn.checkpoint's.)
"""
from __future__ import annotations

import keras

from charrnn.core.params import TrainParams

COSINE_FLOOR = 0.1  # the cosine schedule ends at a tenth of the peak rate


def learning_rate(params: TrainParams, total_steps: int):
    """A float (constant, no warm-up) or a Keras schedule over `total_steps` optimizer steps."""
    warmup = min(params.warmup_steps, max(total_steps - 1, 0))
    if params.schedule == "constant" and warmup == 0:
        return params.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else params.learning_rate,
        decay_steps=max(total_steps - warmup, 1),
        alpha=1.0 if params.schedule == "constant" else COSINE_FLOOR,  # alpha 1: flat after warm-up
        warmup_target=params.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def optimizer(params: TrainParams, total_steps: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(params, total_steps)
    clip = {"global_clipnorm": params.clipnorm} if params.clipnorm > 0 else {}
    if params.weight_decay > 0:
        opt = keras.optimizers.AdamW(rate, weight_decay=params.weight_decay, **clip)
        opt.exclude_from_weight_decay(var_names=["bias"])
        return opt
    return keras.optimizers.Adam(rate, **clip)
