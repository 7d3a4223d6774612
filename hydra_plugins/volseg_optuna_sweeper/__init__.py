"""hydra-optuna-sweeper with a study that resumes: `hydra.sweeper.n_trials` is the study's total.

Hydra finds sweepers only in the `hydra_plugins` namespace package, hence this folder next to
train.py (its directory is on `sys.path` when train.py runs). Three changes to the stock sweeper:

- the folder of a `sqlite:///<path>` storage is made first: Hydra makes the sweep dir only when
  it launches the first job, after the study is opened;
- trials already in the study count towards `n_trials`, so rerunning an interrupted search with
  `hydra.sweep.dir=<its folder>` runs only the remaining trials;
- job numbers (the trial folders) continue after the existing trials instead of overwriting them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


class ResumableOptunaSweeper(OptunaSweeper):
    """`OptunaSweeper` whose `n_trials` counts the trials of earlier, interrupted runs too."""

    def sweep(self, arguments: list[str]) -> Any:
        impl = self.sweeper
        if isinstance(impl.storage, str) and impl.storage.startswith(_SQLITE):
            Path(impl.storage[len(_SQLITE):]).parent.mkdir(parents=True, exist_ok=True)
        earlier = close_earlier_trials(impl.storage, impl.study_name)
        if earlier:
            log.info("study %s holds %d trials; running the remaining %d of n_trials=%d",
                     impl.study_name, earlier, max(impl.n_trials - earlier, 0), impl.n_trials)
        impl.n_trials = max(impl.n_trials - earlier, 0)
        # Trial folders are numbered by job: continue after the existing trials' folders.
        impl.job_idx = earlier
        if impl.n_trials == 0:
            log.info("all trials done; nothing to run")
            return None
        return super().sweep(arguments)


def close_earlier_trials(storage: Any, study_name: str | None) -> int:
    """The number of trials already in the study (0 if there is none yet).

    Trials still marked running were cut off with their sweep (this is a resume; a study is
    swept by one process at a time): they are marked failed, and count as spent.
    """
    if storage is None or study_name is None:
        return 0
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name yet
        return 0
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was interrupted; marking it failed", trial.number)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False))
