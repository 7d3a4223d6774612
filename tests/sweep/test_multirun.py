"""Sweeps from the command line: every combination, failed jobs, the submitit launchers."""

from __future__ import annotations

import csv
import json

import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config
from tests.sweep.conftest import job_metrics, overrides, train
from volseg.report import write_leaderboard


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
