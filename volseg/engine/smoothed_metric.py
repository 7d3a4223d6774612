"""A validation metric smoothed over epochs, for choosing checkpoints and stopping early.

One validation round scores a handful of cases, so its mean Dice moves with the particular
mistakes of that epoch; picking the best checkpoint or stopping on the raw value rewards a
lucky round. nnU-Net v2 selects its best checkpoint on an exponential moving average of its
pseudo Dice (``0.9 * old + 0.1 * new``, Isensee et al. 2021); `SmoothedMetric` does the same
for any logged metric, with the weight as an argument because volseg's runs are often tens of
epochs rather than nnU-Net's thousand.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


class SmoothedMetric(pl.Callback):
    """After each validation round, publish ``name = decay * previous + (1 - decay) * monitor``.

    The first round's smoothed value is its raw value. The value is put into
    ``trainer.callback_metrics`` (where ``ModelCheckpoint`` and ``EarlyStopping`` read their
    monitor, and the training history reads its columns) and sent to the loggers. Place this
    callback before ``EarlyStopping`` in the callback list; Lightning runs checkpoint callbacks
    last on its own. The running value is part of the callback's checkpoint state, so a resumed
    run carries on smoothing.

    Args:
        monitor: the logged metric to smooth, e.g. ``val/dice``.
        name: the smoothed metric's name; ``<monitor>_ema`` when ``None``.
        decay: weight of the previous smoothed value, in [0, 1); 0 turns smoothing off.
    """

    def __init__(self, monitor: str = "val/dice", name: str | None = None,
                 decay: float = 0.5) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"callbacks.smoothed_metric.decay must be in [0, 1), got {decay}")
        self.monitor = monitor
        self.name = name or f"{monitor}_ema"
        self.decay = float(decay)
        self.value: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            raise KeyError(
                f"callbacks.smoothed_metric.monitor={self.monitor!r} was not logged; logged: "
                f"{sorted(k for k in trainer.callback_metrics if k.startswith('val/'))}"
            )
        current = float(current)
        # A NaN round (no case held a class) is passed over: it would poison every later value.
        if math.isfinite(current):
            self.value = current if self.value is None else (
                self.decay * self.value + (1.0 - self.decay) * current)
        published = current if self.value is None else self.value
        trainer.callback_metrics[self.name] = torch.tensor(published)
        for logger in trainer.loggers:
            logger.log_metrics({self.name: published}, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = state_dict.get("value")


__all__ = ["SmoothedMetric"]
