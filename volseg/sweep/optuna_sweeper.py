"""volseg's Optuna sweeper for Hydra: a resumable study, its trials run by any Hydra launcher.

``volseg train -m hparams_search=optuna`` asks the study for ``n_jobs`` trials at a time, runs
them as Hydra jobs through the configured launcher (one after another in this process, or at
once as local processes or SLURM jobs), and tells the study each outcome:

- the job's return value (``optimized_metric``; a list of them for a multi-objective study
  with a list of ``direction``) completes the trial;
- a job that raised, returned nothing, or returned NaN/inf is a FAIL, and the sweep goes on;
- a job that `volseg.sweep.pruning.OptunaPruning` stopped is PRUNED, with its last value.

The study lives in ``storage``: ``sqlite:///<file>`` (SQLAlchemy), or ``journal:///<file>``,
Optuna's journal file, which several processes on a shared file system (SLURM jobs) may write
at once. Started again with the same storage and study name, the sweep resumes: ``n_trials``
counts the study's whole history, and a trial that was running when the sweep was killed is
marked failed and tried again with the same parameters. Trial ``n`` runs in job folder ``n``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from volseg.sweep.pruning import Pruned
from volseg.sweep.search_space import SearchSpace, parse

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
JOURNAL = "journal:///"
SQLITE = "sqlite:///"
# Written into the sweep folder: where the study is, for `volseg report` and optuna-dashboard.
STUDY_FILE = "optuna_study.json"
# A trial that was running when its sweep was killed: failed, and tried again.
INTERRUPTED = "interrupted"


def open_storage(url: str | None) -> str | optuna.storages.BaseStorage | None:
    """The study storage for ``url``: ``sqlite:///<file>`` (its folder made) or
    ``journal:///<file>`` (a journal file); ``None``: in memory."""
    if url is None:
        return None
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith(SQLITE):
        Path(url[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)
    return url


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for an ask-and-tell sweep: Optuna's own stops the study once the
    grid is covered, which works only inside ``study.optimize`` (under ``tell`` it raises
    and leaves the last trial running); the sweeper stops asking instead (`is_exhausted`)."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        pass


class OptunaSweeper(Sweeper):
    """Hydra sweeper over an Optuna study (see the module docstring).

    Args:
        sampler: the sampler (Hydra builds it from ``hydra.sweeper.sampler``): TPE, random,
            CMA-ES, or the grid sampler as a partial (``_partial_: true``) that gets its grid
            from the search space; ``None``: Optuna's default (TPE).
        pruner: the pruner (median, Hyperband), or ``None``: no pruning.
        direction: ``minimize`` or ``maximize``, or a list of them (multi-objective: the job
            returns one value per direction).
        storage: ``sqlite:///...``, ``journal:///...`` or ``None`` (in memory: no resuming).
        study_name: the study; an existing one in ``storage`` is resumed.
        n_trials: trials in the whole study, counting those of earlier runs.
        n_jobs: trials run at once (a parallel launcher runs them in parallel).
        params: the search space: key -> sweep (``choice(...)``, ``interval(...)``, ...);
            command-line sweeps are added to it and win over it.
    """

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler | functools.partial | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        direction: str | Sequence[str] = "maximize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        if not self.directions or any(d not in DIRECTIONS for d in self.directions):
            raise ValueError(f"hydra.sweeper.direction: {direction}; each of {DIRECTIONS}")
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise ValueError(f"hydra.sweeper: n_trials={n_trials} and n_jobs={n_jobs} must be "
                             ">= 1")
        if pruner is not None and storage is None:
            raise ValueError("hydra.sweeper.pruner needs a storage: a trial's job reports to "
                             "the study through it")
        self.sampler, self.pruner = sampler, pruner
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse([*(f"{k}={v}" for k, v in self.params.items()), *arguments], parser)
        study = self.open_study(space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / STUDY_FILE).write_text(json.dumps(
            {"storage": self.storage, "study_name": study.study_name,
             "directions": self.directions}, indent=2))
        returns: list[JobReturn] = []
        while (done := counted_trials(study)) < self.n_trials:
            if isinstance(study.sampler, GridSampler) and study.sampler.is_exhausted(study):
                log.info("the grid is covered after %d trials", done)
                break
            trials = [study.ask(space.distributions)
                      for _ in range(min(self.n_jobs, self.n_trials - done))]
            returns += self.run(study, trials, space)
        self.write_results(study, sweep_dir)
        return returns

    def open_study(self, space: SearchSpace) -> optuna.Study:
        """Create the study, or resume it: its interrupted trials failed and queued again."""
        sampler = self.sampler
        if isinstance(sampler, functools.partial):  # the grid sampler: the grid is the space
            sampler = sampler(search_space=space.grid())
        study = optuna.create_study(
            study_name=self.study_name, storage=open_storage(self.storage), sampler=sampler,
            pruner=self.pruner, directions=self.directions, load_if_exists=True)
        if [d.name.lower() for d in study.directions] != self.directions:
            raise ValueError(f"study {study.study_name} in {self.storage} has directions "
                             f"{[d.name.lower() for d in study.directions]}, not "
                             f"{self.directions}")
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning("trial %d was interrupted; it is marked failed and tried again",
                        trial.number)
            optuna.trial.Trial(study, trial._trial_id).set_user_attr(INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        done = counted_trials(study)
        if done:
            log.info("study %s holds %d trials; running %d more of n_trials=%d",
                     study.study_name, done, max(self.n_trials - done, 0), self.n_trials)
        return study

    def run(self, study: optuna.Study, trials: Sequence[optuna.Trial],
            space: SearchSpace) -> list[JobReturn]:
        """Launch the trials' jobs, trial ``n`` in job folder ``n``; tell the study each outcome."""
        batch = [space.overrides(trial.params) for trial in trials]
        self.validate_batch_is_legal(batch)
        numbers = [trial.number for trial in trials]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            results = list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        else:  # another process asked for trials in between (a shared journal): one by one
            results = [r for overrides, n in zip(batch, numbers)
                       for r in self.launcher.launch([overrides], initial_job_idx=n)]
        for trial, result in zip(trials, results):
            state, values = outcome(result, len(self.directions))
            told = study.tell(trial, values, state=state)
            log.info("trial %d: %s %s", trial.number, state.name, told.values or "")
        return results

    def write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        """``optimization_results.yaml``: the best trial's parameters and value(s)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning("no trial completed")
            return
        if len(self.directions) == 1:
            best: dict[str, Any] = {"best_params": study.best_trial.params,
                                    "best_value": study.best_trial.value}
        else:
            best = {"best_trials": [{"number": t.number, "params": t.params, "values": t.values}
                                    for t in study.best_trials]}
        OmegaConf.save(OmegaConf.create({"name": "optuna", **best}),
                       sweep_dir / "optimization_results.yaml")
        log.info("best: %s", best)


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """The study's trial ``number``."""
    (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return trial


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: those run or running, but not the interrupted
    ones (tried again) nor those queued to be (waiting)."""
    return sum(t.state != TrialState.WAITING and not t.user_attrs.get(INTERRUPTED)
               for t in study.get_trials(deepcopy=False))


def outcome(result: JobReturn, num_objectives: int) -> tuple[TrialState, list[float] | None]:
    """The trial state and values a job's result tells the study."""
    if result.status != JobStatus.COMPLETED:
        return TrialState.FAIL, None
    value = result._return_value  # the property would re-raise a failed job's exception
    if isinstance(value, Pruned):
        return TrialState.PRUNED, None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        return TrialState.FAIL, None
    if len(floats) != num_objectives or not all(math.isfinite(v) for v in floats):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, floats


__all__ = ["OptunaSweeper", "counted_trials", "open_storage", "outcome", "trial_by_number"]
