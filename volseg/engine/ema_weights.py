"""An exponential moving average of the weights that validation, checkpoints and tests share."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class EMAWeights(EMAWeightAveraging):
    """Lightning's `EMAWeightAveraging`, whose checkpoints are tested with the averaged weights.

    Lightning validates with the average and saves it as a checkpoint's ``state_dict`` (the raw
    weights ride along as ``current_model_state``, to resume training). But when a checkpoint
    is loaded it restores the raw weights whatever the trainer is doing, so ``test: true``
    would score the best checkpoint, chosen on the average's validation, with the raw weights
    instead (found by a test: the test Dice of an EMA run equalled the raw run's to the last
    digit). Here the raw weights are restored only to resume fitting; testing, validating and
    predicting a checkpoint use its ``state_dict``, the average, as ``volseg predict`` does.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


__all__ = ["EMAWeights"]
