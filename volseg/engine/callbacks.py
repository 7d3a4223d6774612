"""Stop training once every foreground class has reached a validation score."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

log = logging.getLogger(__name__)


class AllClassesReached(pl.Callback):
    """Ends training after the validation round in which the last class crosses ``threshold``.

    The HipMRI residual U-Net replication stops "when all classes have Dice >= 0.7". Plain
    early stopping on the mean Dice would stop with a small structure (the prostate) still
    below the bar while the large ones pull the mean up; this callback waits for each class.
    It reads the per-class values `SegmentationModule` logs, ``val/dice_<class>``, so it works
    with any score logged the same way where higher is better (``metric_prefix="val/nsd_"``).
    A NaN (class absent from every validation case and never predicted) counts as not reached.

    Args:
        threshold: score every class must reach, in [0, 1].
        metric_prefix: logged name of a class's score without the class name.
        class_names: classes to check; ``None``: every foreground class of the module
            (``pl_module.class_names`` without the first, background).
    """

    def __init__(
        self, threshold: float = 0.7, metric_prefix: str = "val/dice_",
        class_names: Sequence[str] | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
                0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not isinstance(metric_prefix, str) or not metric_prefix:
            raise ValueError(f"metric_prefix must be a non-empty string, got {metric_prefix!r}")
        if class_names is not None:
            if isinstance(class_names, str) or not class_names:
                raise ValueError(
                    f"class_names must be a non-empty list of names or None, got {class_names!r}")
            if len(set(class_names)) != len(class_names):
                raise ValueError(f"class_names has duplicates: {list(class_names)}")
        self.threshold = float(threshold)
        self.metric_prefix = metric_prefix
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.stopped_epoch: int | None = None  # the epoch whose validation ended training

    def _classes(self, pl_module: pl.LightningModule) -> list[str]:
        if self.class_names is not None:
            return self.class_names
        names = getattr(pl_module, "class_names", None)
        if not names or len(names) < 2:
            raise ValueError(
                "AllClassesReached: the module has no foreground class_names; pass class_names")
        return list(names[1:])

    def scores(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, torch.Tensor]:
        """The latest logged score of every checked class, by class name.

        Raises:
            KeyError: a class's score was not logged, naming what was.
        """
        logged = trainer.callback_metrics
        names = {c: f"{self.metric_prefix}{c}" for c in self._classes(pl_module)}
        missing = [key for key in names.values() if key not in logged]
        if missing:
            raise KeyError(
                f"AllClassesReached: {missing} not logged; logged metrics: {sorted(logged)}")
        return {c: torch.as_tensor(logged[key]).squeeze() for c, key in names.items()}

    def _reached(self, score: torch.Tensor) -> bool:
        # Compared in the metric's own precision: a float32 Dice logged as 0.7 reads
        # 0.69999999 as a Python float and would never reach 0.7. NaN never reaches it.
        return bool(score >= torch.tensor(self.threshold, dtype=score.dtype))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only fitting counts: the sanity check's single volume, trainer.validate() and
        # fast_dev_run must not end a run.
        if (trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                or trainer.fast_dev_run):
            return
        scores = self.scores(trainer, pl_module)
        reached = all(self._reached(v) for v in scores.values())
        # Under DDP the metrics are already synced; any rank deciding makes every rank stop.
        reached = trainer.strategy.reduce_boolean_decision(reached, all=False)
        if reached:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            log.info("every class reached %s >= %.3f at epoch %d: %s", self.metric_prefix,
                     self.threshold, trainer.current_epoch,
                     ", ".join(f"{c} {float(v):.3f}" for c, v in scores.items()))

    def state_dict(self) -> dict[str, Any]:
        return {"stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped_epoch = state_dict.get("stopped_epoch")
