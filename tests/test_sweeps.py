"""Sweeps from the command line: multirun, Optuna with resume, the submitit launchers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import FAST, compose_config
from volseg.report import write_leaderboard

REPO = Path(__file__).resolve().parents[1]

# FAST cut to one training step and one validation volume, without what a sweep test does not
# look at (sanity check, surface metrics, loggers): each job then costs a few seconds.
TINY = [o for o in FAST if not o.startswith(("trainer.max_epochs", "data.samples_per_epoch"))] + [
    "trainer.max_epochs=1",
    "data.samples_per_epoch=2",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "module.surface_metrics=false",
    "logger=none",
    "callbacks.lr_monitor=null",
    "data.cache_workers=0",
]


@pytest.fixture(scope="module")
def data_dir(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY dataset generated, cached and split once, before jobs that may run at once."""
    cfg = compose_config("train", tmp_path_factory.mktemp("prepare"), TINY,
                         data_dir=shared_data_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return shared_data_dir


def train(cwd: Path, data_dir: Path, *overrides: str, multirun: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """``train.py [-m] <overrides>`` with the TINY run, every output under ``cwd``."""
    # The test's overrides last: they win over TINY's.
    command = [sys.executable, str(REPO / "train.py"), *(["-m"] if multirun else []), *TINY,
               f"paths.root_dir={cwd}", f"paths.data_dir={data_dir}", *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def job_metrics(sweep_dir: Path) -> dict[int, dict]:
    """``{job number: its metrics.json}`` for every numbered job folder of a sweep."""
    return {int(p.name): json.loads((p / "metrics.json").read_text())
            for p in sweep_dir.iterdir() if p.name.isdigit()}


def overrides(job_dir: Path) -> set[str]:
    """The command-line overrides that made this job (Hydra keeps them with it)."""
    return set(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))


@pytest.mark.slow
def test_multirun_runs_every_combination_and_goes_on_past_a_failed_job(tmp_path, data_dir):
    # features=6 is fine for the U-Net; Res2UNet3D refuses it (not a multiple of scale=4), so
    # one row of the grid fails while the other trains.
    done = train(tmp_path, data_dir, "model=unet3d,res2unet3d", "loss=dice,focal_tversky",
                 "model.features=6", f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_metrics(tmp_path / "sweep")
    assert sorted(jobs) == [0, 1, 2, 3]
    by_choice = {}  # (model, loss) -> that job's metrics.json
    for number, metrics in jobs.items():
        chosen = overrides(tmp_path / "sweep" / str(number))
        model, loss = (next(o.split("=")[1] for o in chosen if o.startswith(f"{group}="))
                       for group in ("model", "loss"))
        by_choice[model, loss] = metrics
    assert len(by_choice) == 4  # every combination once
    for loss in ("dice", "focal_tversky"):
        good, bad = by_choice["unet3d", loss], by_choice["res2unet3d", loss]
        assert good["status"] == "completed" and 0 <= good["val/dice"] <= 1
        assert bad["status"] == "failed"
        assert bad["error"].startswith("ValueError: features must be a positive multiple of")
        assert "\n" not in bad["error"]

    # The leaderboard of this real sweep: completed jobs ranked by val/dice, failed ones last.
    write_leaderboard([tmp_path / "sweep"])
    with (tmp_path / "sweep" / "leaderboard.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"]
    assert float(rows[0]["val/dice"]) >= float(rows[1]["val/dice"])
    assert {r["configuration"] for r in rows[:2]} == {"model=unet3d loss=dice",
                                                      "model=unet3d loss=focal_tversky"}
    assert all(int(r["parameters"]) > 0 and int(r["epochs"]) == 1 for r in rows[:2])
    assert rows[2]["error"].startswith("ValueError: features must be a positive multiple of")


@pytest.mark.slow
def test_single_run_failure_exits_non_zero_and_is_recorded(tmp_path, data_dir):
    done = train(tmp_path, data_dir, "optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 1
    assert "Invalid learning rate: -1" in done.stderr
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "ValueError: Invalid learning rate: -1"


@pytest.mark.slow
def test_optuna_study_resumes_in_its_sweep_dir(tmp_path, data_dir):
    import optuna

    search = ["hparams_search=optuna", "model.features=4"]  # a fixed width: fast trials
    first = train(tmp_path, data_dir, *search, "hydra.sweeper.n_trials=2", multirun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    # The default, time-stamped sweep dir is what a user finds and resumes.
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    assert len(optuna.load_study(study_name="train", storage=storage).trials) == 2

    # Resume towards 3 trials in all; the remaining one fails (a learning rate Adam refuses).
    second = train(tmp_path, data_dir, *search, "hydra.sweeper.n_trials=3", "optimizer.lr=-1",
                   f"hydra.sweep.dir={sweep_dir}", multirun=True)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = optuna.load_study(study_name="train", storage=storage).trials
    states = [t.state for t in trials]
    complete, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    assert states == [complete, complete, fail]
    jobs = job_metrics(sweep_dir)
    # Trial n ran in folder n: the resumed trial did not overwrite the earlier ones.
    assert [jobs[n]["status"] for n in range(3)] == ["completed", "completed", "failed"]
    assert [trials[n].value for n in range(2)] == [jobs[n]["val/dice"] for n in range(2)]
    assert (sweep_dir / "optimization_results.yaml").is_file()


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_in_their_own_processes(tmp_path, data_dir):
    # Two jobs at once (two cores): one trains, one fails on a learning rate Adam refuses.
    done = train(tmp_path, data_dir, "hydra/launcher=local", "optimizer.lr=0.003,-1",
                 multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # The default sweep dir (<time>_<pid>): the jobs, in processes of their own, name the same.
    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    jobs = job_metrics(sweep_dir)
    assert [jobs[n]["status"] for n in range(2)] == ["completed", "failed"]
    assert jobs[1]["error"] == "ValueError: Invalid learning rate: -1"
    # Each job ran in a process of its own: one submitit log folder per job, named by its pid.
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]) == 2


def test_slurm_launcher_composes_with_the_trainer_devices(tmp_path):
    cfg = compose_config("train", tmp_path, ["hydra/launcher=slurm", "trainer.devices=4",
                                             "hydra.launcher.partition=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    # By name: Hydra's plugin scan imports the module again, so the class objects differ.
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["gpus_per_node"], params["tasks_per_node"], params["nodes"]) == (4, 4, 1)
    assert params["partition"] == "gpu"
    # Lightning's SLURMEnvironment requeues on SIGUSR1, signal_delay_s before the time limit.
    assert params["additional_parameters"] == {"signal": f"USR1@{params['signal_delay_s']}"}
    assert params["submitit_folder"].startswith(cfg.hydra.sweep.dir)


def test_optuna_search_space_composes(tmp_path):
    cfg = compose_config("train", tmp_path, ["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/dice"
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert sweeper.sampler.seed is not None
    assert set(sweeper.params) >= {"optimizer.lr", "loss", "model.features"}


def test_a_trial_cut_off_mid_run_is_marked_failed_and_counts(tmp_path):
    import optuna

    from hydra_plugins.volseg_optuna_sweeper import close_earlier_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 0.5)
    study.ask()  # its sweep was killed: the trial stays "running" in the database
    assert close_earlier_trials(storage, "s") == 2
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == ["COMPLETE", "FAIL"]
    assert close_earlier_trials(storage, "another") == 0  # no such study yet
