"""``last.ckpt``: the one checkpoint that always holds a run's newest state, to resume from."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn


class LastCheckpoint(ModelCheckpoint):
    """The only writer of ``<dirpath>/last.ckpt``, which it keeps the run's newest state.

    It saves:

    - every ``every_n_train_steps`` optimizer steps, also mid-epoch, so that a killed run
      resumes (``ckpt_path=last``) from its last saved step, not from the start of the epoch;
      but not at an epoch's last batch, whose state the epoch-end save writes after the
      validation round: Lightning counts an epoch whose last batch is in the checkpoint as
      done, so a run killed during that validation and resumed from it would never validate
      the epoch (no metrics in its history, no chance at the best checkpoint);
    - at the end of every training epoch, even when that step was just saved: the epoch's
      validation has run since (early stopping, the best checkpoint, the loop state moved on);
    - when fit ends, if its last step was not saved yet.

    A plain ModelCheckpoint cannot do this: with ``every_n_train_steps`` it saves at those
    steps only (its epoch-end saves are off), and a second one with ``save_last`` (the
    best-checkpoint callback) writes ``last-v1.ckpt`` beside it, a stray file that can be newer
    than the ``last.ckpt`` a resume reads. This one keeps no other file (``save_top_k=0``) and
    rewrites ``last.ckpt`` in place, never as a versioned name. The best checkpoint belongs to
    another ModelCheckpoint with ``save_last=False``, listed before this one (Lightning runs
    checkpoint callbacks in their given order, after the others) so that its epoch-end update
    is in ``last.ckpt`` too.

    Args:
        dirpath: the checkpoints folder.
        every_n_train_steps: optimizer steps between saves; 0 or ``None``: only at epoch ends
            and the end of fit.
        **kwargs: other `ModelCheckpoint` arguments (``save_weights_only``, ``verbose``).
    """

    def __init__(
        self, dirpath: str | None = None, every_n_train_steps: int | None = 50, **kwargs: Any
    ) -> None:
        # every_n_epochs=0: ModelCheckpoint's own epoch-end logic stays off; the hooks below
        # save at epoch ends instead, whatever the step interval.
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps or 0,
                         every_n_epochs=0, save_top_k=0, save_last=True, monitor=None,
                         enable_version_counter=False, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        later = trainer.callbacks[trainer.callbacks.index(self) + 1:]
        if any(isinstance(c, ModelCheckpoint) for c in later):
            rank_zero_warn("LastCheckpoint comes before another ModelCheckpoint: last.ckpt will "
                           "miss that callback's epoch-end update; list LastCheckpoint last")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Its record is where last.ckpt was. From another folder (a run resumed into a new
        # one) there is nothing to carry over, and ModelCheckpoint would warn that the
        # dirpath changed.
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
            return  # saved at the epoch's end, after its validation
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every way fit ends normally passes an epoch end first; this is the safety net.
        if self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        """Rewrite last.ckpt, when fitting for real (not a sanity check or fast_dev_run)."""
        if (trainer.fast_dev_run or trainer.sanity_checking
                or trainer.state.fn != TrainerFn.FITTING):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
