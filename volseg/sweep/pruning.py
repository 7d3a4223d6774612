"""A trial's training run reports its monitored metric to Optuna, and stops when pruned.

The sweeper runs each trial as a Hydra job, in this process or another (submitit, SLURM): the
job finds its trial in the study's storage by its job number, which the sweeper makes the
trial number. After each validation round `OptunaPruning` reports the monitored metric (the
sweep's ``optimized_metric``) as the trial's intermediate value at that epoch; when the study's
pruner says so, training stops, the run is recorded as pruned (no test), and the job returns
`Pruned`, which the sweeper tells the study as a PRUNED trial with its last value.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial's job returns to the sweeper: its last reported value."""

    value: float


class OptunaPruning(pl.Callback):
    """Report ``monitor`` to the trial after each validation; stop the run when it is pruned.

    Args:
        storage: the study's storage (``sqlite:///...`` or ``journal:///...``); ``None`` (an
            in-memory study, which a job cannot reach): nothing is reported.
        study_name: the study.
        trial_number: this run's trial (the job number the sweeper gave it).
        monitor: the logged metric to report, e.g. ``val/dice``; a list (a multi-objective
            study, which Optuna cannot prune): nothing is reported.
        pruner: the study's pruner (Hydra builds it from ``hydra.sweeper.pruner``); ``None``:
            report, never prune.
    """

    def __init__(self, storage: str | None, study_name: str | None, trial_number: int,
                 monitor: Any, pruner: Any = None) -> None:
        self.storage, self.study_name = storage, study_name
        self.trial_number, self.monitor, self.pruner = int(trial_number), monitor, pruner
        self.pruned = False
        self.value: float | None = None
        self._trial: Any = None

    @property
    def active(self) -> bool:
        return self.storage is not None and isinstance(self.monitor, str)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.active or not trainer.is_global_zero:
            return
        import optuna

        from volseg.sweep.optuna_sweeper import open_storage, trial_by_number

        pruner = self.pruner or optuna.pruners.NopPruner()
        try:
            study = optuna.load_study(study_name=self.study_name,
                                      storage=open_storage(self.storage), pruner=pruner)
            trial = trial_by_number(study, self.trial_number)
        except (KeyError, ValueError):  # not a trial of a sweep: hparams_search without -m
            log.warning("no trial %d of study %s in %s: nothing is reported",
                        self.trial_number, self.study_name, self.storage)
            return
        self._trial = optuna.trial.Trial(study, trial._trial_id)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.active:
            return
        prune = False
        if trainer.is_global_zero and self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):
                self.value = float(value)
                self._trial.report(self.value, step=trainer.current_epoch)
                prune = self._trial.should_prune()
        # Every DDP rank stops together, on rank 0's word.
        if trainer.strategy.broadcast(prune):
            self.pruned = True
            trainer.should_stop = True
            log.info("trial %d pruned at epoch %d (%s = %s)", self.trial_number,
                     trainer.current_epoch, self.monitor, self.value)
