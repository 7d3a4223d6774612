"""volseg's Optuna sweeper: outcomes, resuming, and real searches as a user types them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from tests.conftest import compose_config
from tests.sweep.conftest import job_metrics, train, train_command
from volseg.sweep.optuna_sweeper import (
    INTERRUPTED,
    OptunaSweeper,
    counted_trials,
    open_storage,
    outcome,
)
from volseg.sweep.pruning import Pruned
from volseg.sweep.search_space import parse

COMPLETE, FAIL, PRUNED = TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED


def _job(value: object, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    job = JobReturn(status=status)
    job.return_value = value
    return job


@pytest.mark.parametrize(("value", "objectives", "expected"), [
    (0.5, 1, (COMPLETE, [0.5])),
    ([0.5, 2.0], 2, (COMPLETE, [0.5, 2.0])),
    (None, 1, (FAIL, None)),  # the job failed in a sweep and returned nothing
    (float("nan"), 1, (FAIL, None)),
    (float("inf"), 1, (FAIL, None)),
    ([0.5], 2, (FAIL, None)),  # one value for a two-objective study
    ("0.5x", 1, (FAIL, None)),
    (Pruned(0.3), 1, (PRUNED, None)),  # the study keeps the last reported value
])
def test_each_job_result_tells_the_study_its_state(value, objectives, expected):
    assert outcome(_job(value), objectives) == expected


def test_a_job_that_raised_fails_its_trial():
    assert outcome(_job(RuntimeError("boom"), JobStatus.FAILED), 1) == (FAIL, None)


def test_storages_make_their_folders(tmp_path):
    journal = open_storage(f"journal:///{tmp_path}/a/study.log")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert (tmp_path / "a").is_dir()
    assert open_storage(f"sqlite:///{tmp_path}/b/optuna.db").endswith("b/optuna.db")
    assert (tmp_path / "b").is_dir() and open_storage(None) is None


def test_resuming_fails_the_interrupted_trial_and_queues_it_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = parse(["x=interval(0, 1)"])
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask(space.distributions), 0.5)
    cut = study.ask(space.distributions)  # its sweep was killed: still "running"
    resumed = OptunaSweeper(storage=storage, study_name="s", n_trials=3).open_study(space)
    trials = resumed.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [COMPLETE, FAIL, TrialState.WAITING]
    assert trials[1].user_attrs[INTERRUPTED] is True
    # The retry: same parameters, asked first; the interrupted trial does not count.
    assert counted_trials(resumed) == 1
    assert resumed.ask(space.distributions).params == cut.params


def test_a_study_with_other_directions_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    with pytest.raises(ValueError):
        OptunaSweeper(storage=storage, study_name="s").open_study(parse([]))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="hydra.sweeper.direction"):
        OptunaSweeper(direction="up")
    with pytest.raises(ValueError, match="pruner needs a storage"):
        OptunaSweeper(pruner=optuna.pruners.MedianPruner())


def test_the_search_config_composes(tmp_path):
    cfg = compose_config("train", tmp_path, ["hparams_search=optuna",
                                             "hydra/sweeper/sampler=cmaes",
                                             "hydra/sweeper/pruner=hyperband"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.volseg_optuna_sweeper.VolsegOptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/dice"
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert sweeper.sampler._target_ == "optuna.samplers.CmaEsSampler"
    assert sweeper.pruner._target_ == "optuna.pruners.HyperbandPruner"
    assert set(sweeper.params) >= {"optimizer.lr", "loss", "model.features"}
    assert cfg.callbacks.optuna_pruning.monitor == "val/dice"


# --- real searches -------------------------------------------------------------------------


def _study(sweep_dir: Path) -> optuna.Study:
    settings = json.loads((sweep_dir / "optuna_study.json").read_text())
    return optuna.load_study(study_name=settings["study_name"],
                             storage=open_storage(settings["storage"]))


@pytest.mark.slow
def test_a_search_killed_in_its_second_trial_resumes_to_three_finished_trials(tmp_path,
                                                                              data_dir):
    sweep = tmp_path / "sweep"
    command = train_command(tmp_path, data_dir, "hparams_search=optuna",
                            "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                            multirun=True)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (sweep / "1" / ".hydra").is_dir():  # the second trial has started
        assert first.poll() is None and time.monotonic() < deadline, "no second trial"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert _study(sweep).trials[1].state == TrialState.RUNNING

    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = _study(sweep).trials
    assert [t.state for t in trials] == [COMPLETE, FAIL, COMPLETE, COMPLETE]
    assert trials[1].user_attrs[INTERRUPTED] and trials[2].params == trials[1].params
    # Trial n ran in job folder n; the cut-off one left no metrics.
    jobs = job_metrics(sweep)
    assert sorted(jobs) == [0, 2, 3]
    assert [trials[n].value for n in (0, 2, 3)] == [jobs[n]["val/dice"] for n in (0, 2, 3)]


@pytest.mark.slow
def test_a_grid_search_in_a_journal_records_a_diverging_trial_as_failed(tmp_path, data_dir):
    sweep, journal = tmp_path / "sweep", tmp_path / "shared" / "study.log"
    done = train(tmp_path, data_dir, "hparams_search=optuna", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.params=null", "hydra.sweeper.n_trials=2",
                 f"hydra.sweeper.storage=journal:///{journal}", f"hydra.sweep.dir={sweep}",
                 "optimizer.lr=choice(0.003,1e30)",
                 # A second step, whose loss the first step's 1e30 update has made NaN.
                 "data.samples_per_epoch=4", multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert journal.is_file()
    trials = sorted(_study(sweep).trials, key=lambda t: t.params["optimizer.lr"])
    assert [(t.params["optimizer.lr"], t.state) for t in trials] == [(0.003, COMPLETE),
                                                                    (1e30, FAIL)]
    failed = job_metrics(sweep)[trials[1].number]
    assert failed["status"] == "failed" and "loss" in failed["error"].lower()

    # The report reads the study: every trial's state, the charts, the best trial.
    volseg = Path(sys.executable).parent / "volseg"
    report = subprocess.run([str(volseg), "report", str(sweep)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = (sweep / "study.csv").read_text().splitlines()
    assert rows[0].startswith("trial,job,state,value,duration_s,param:optimizer.lr")
    assert sorted(r.split(",")[2] for r in rows[1:]) == ["COMPLETE", "FAIL"]
    assert (sweep / "optimization_history.png").stat().st_size > 1000
    board = (sweep / "leaderboard.md").read_text()
    assert "2 trials: 1 complete, 1 fail" in board
    assert f"Best: trial {trials[0].number}" in board


@pytest.mark.slow
def test_a_pruned_trial_stops_and_keeps_its_last_value(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    # A pruner that prunes at the first report: Dice never exceeds 1.5.
    done = train(tmp_path, data_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.5}",
                 "trainer.max_epochs=3", f"hydra.sweep.dir={sweep}", multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _study(sweep).trials
    assert [t.state for t in trials] == [PRUNED, PRUNED]
    jobs = job_metrics(sweep)
    for trial in trials:
        assert trial.intermediate_values == {0: trial.value}  # reported once, then stopped
        record = jobs[trial.number]
        assert record["status"] == "pruned" and record["epochs"] == 1
        assert record["pruned_value"] == pytest.approx(trial.value)


@pytest.mark.slow
def test_a_multi_objective_study_keeps_both_values(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    done = train(tmp_path, data_dir, "hparams_search=optuna", "hydra/sweeper/sampler=random",
                 "hydra.sweeper.direction=[maximize,minimize]",
                 "optimized_metric=[val/dice,val/loss]", "hydra.sweeper.n_trials=2",
                 f"hydra.sweep.dir={sweep}", multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    study = _study(sweep)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    jobs = job_metrics(sweep)
    for trial in study.trials:
        assert trial.state == COMPLETE
        assert trial.values == [jobs[trial.number]["val/dice"], jobs[trial.number]["val/loss"]]
    assert "best_trials" in (sweep / "optimization_results.yaml").read_text()
