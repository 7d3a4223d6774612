"""The best checkpoint, carried across a resume into another run folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from volseg.io.atomic import atomic_path

log = logging.getLogger(__name__)


class BestCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose best checkpoints follow a run resumed into another folder.

    A plain ModelCheckpoint restored from a checkpoint saved with another ``dirpath`` (a
    checkpoint resumed from outside its run's ``checkpoints/``, a run folder moved since) keeps
    only ``best_model_path``: it warns "The dirpath has changed", forgets the best score, and
    saves the next validated epoch as the best, whatever the epochs before the resume scored.
    This one copies the restored best checkpoints (``best_k_models``; one with
    ``save_top_k: 1``) into its own ``dirpath`` under their names, atomically, and tracks them
    there with their scores: the best of the whole history is kept, and a copy is deleted as
    usual once a later epoch beats it. A file that is gone (neither where the state says nor
    already in ``dirpath``) is left out with one log line; the scores start afresh if none is
    left. The copy happens when training starts, on rank 0.

    Its checkpoint state is a plain ModelCheckpoint's, under the same key: checkpoints saved
    with either restore into either. Every ModelCheckpoint argument (``monitor``, ``mode``,
    ``save_top_k``, ...) works as there.

    It also tells whether the best checkpoint holds the weights the latest validation round
    scored (`best_is_latest_validation`): then that round's metrics are the best checkpoint's,
    and `volseg.engine.train` need not validate it again.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._moved_state: dict[str, Any] | None = None  # restored from another dirpath
        # Global steps of this fit's latest validation round and latest new best.
        self._validated_at: int | None = None
        self._best_saved_at: int | None = None

    @property
    def best_is_latest_validation(self) -> bool:
        """Whether this fit's latest validation round scored the weights the best checkpoint
        holds: it saved a new best after that round, before any further training step."""
        return self._best_saved_at is not None and self._best_saved_at == self._validated_at

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING
        if fitting:
            self._validated_at = trainer.global_step
        self._track_new_best(trainer, fitting, super().on_validation_end, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning saves here, right after the epoch's validation, when validation runs at
        # the end of every epoch.
        self._track_new_best(trainer, True, super().on_train_epoch_end, pl_module)

    def _track_new_best(self, trainer: pl.Trainer, fitting: bool, save: Any,
                        pl_module: pl.LightningModule) -> None:
        before = self._best()
        save(trainer, pl_module)
        # A new best is strictly better than the old (or the first): its path or score moves.
        if fitting and self._best() != before:
            self._best_saved_at = trainer.global_step

    def _best(self) -> tuple[str, str]:
        score = self.best_model_score
        return self.best_model_path, "" if score is None else repr(float(score))

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__,
                                         ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        # Until training starts (and copies it) the best checkpoint is where it was, as with
        # Lightning's own fallback: a fit with no epoch left to run still tests it.
        self.best_model_path = state_dict.get("best_model_path", "")
        self._moved_state = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        state, self._moved_state = self._moved_state, None
        if state is None:
            return
        scores = _copy_best_k(state, self.dirpath) if trainer.is_global_zero else None
        scores = trainer.strategy.broadcast(scores)
        lower_is_better = self.mode == "min"
        self.best_k_models = scores
        self.current_score = state.get("current_score")
        self.best_model_path, self.best_model_score = "", None
        self.kth_best_model_path = ""
        self.kth_value = torch.tensor(torch.inf if lower_is_better else -torch.inf)
        if scores:
            self.best_model_path = (min if lower_is_better else max)(scores, key=scores.get)
            self.best_model_score = scores[self.best_model_path]
            if len(scores) == self.save_top_k:
                self.kth_best_model_path = (max if lower_is_better else min)(scores,
                                                                            key=scores.get)
                self.kth_value = scores[self.kth_best_model_path]


def _copy_best_k(state: dict[str, Any], dirpath: str | Path) -> dict[str, Any]:
    """Copy each of ``state``'s ``best_k_models`` into ``dirpath``; their scores by new path."""
    scores = {}
    for old, score in (state.get("best_k_models") or {}).items():
        new = Path(dirpath) / Path(old).name
        if Path(old).is_file():
            new.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(new) as tmp:
                shutil.copyfile(old, tmp)
        elif not new.is_file():  # not a run folder moved along with its checkpoints either
            log.warning("best checkpoint %s of the resumed run is gone: its score no longer "
                        "counts in choosing the best checkpoint in %s", old, dirpath)
            continue
        scores[str(new)] = score
    return scores


__all__ = ["BestCheckpoint"]
