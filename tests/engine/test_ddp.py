"""Data-parallel training on two CPU processes (gloo): synced metrics, one output folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import FAST, compose_config
from volseg.engine.checkpoint_loading import load_module
from volseg.metrics.overlap import dice

REPO = Path(__file__).resolve().parents[2]

# 3 validation cases of 6: an odd number, which Lightning's own DistributedSampler would pad by
# scoring one case on both ranks. A split file of its own, so the shared one stays as it is.
THREE_VAL_CASES = ["data.split.val=0.5", "data.split.test=0.17"]


def _train_cli(tmp_path: Path, data_dir: Path, *overrides: str, multirun: bool = False) -> None:
    """Run ``train.py trainer=ddp_cpu`` (2 processes, rank 1 started as a script)."""
    command = [sys.executable, str(REPO / "train.py"), *(["-m"] if multirun else []), *FAST,
               "trainer=ddp_cpu", "test=false", "module.surface_metrics=false",
               f"paths.root_dir={tmp_path}", f"paths.data_dir={data_dir}", *overrides]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_train_into_one_folder_and_sync_validation_over_all_cases(
    tmp_path, shared_data_dir
):
    _train_cli(tmp_path, shared_data_dir, *THREE_VAL_CASES,
               f"data.split.file={tmp_path}/splits.json")
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1  # rank 1 wrote into rank 0's folder
    metrics = json.loads((runs[0] / "metrics.json").read_text())  # rank 0's, whole
    # Both ranks log into the run's train.log; only rank 0 wrote metrics.json.
    log = (runs[0] / "train.log").read_text()
    assert "[rank: 1] Seed set" in log
    assert log.count("metrics written to") == 1
    assert metrics["status"] == "completed"
    assert metrics["epochs"] == 2
    assert (runs[0] / ".hydra" / "config.yaml").is_file()

    # Score every validation case again in this one process, from the checkpoint alone.
    module = load_module(metrics["best_model_path"])
    cfg = compose_config("train", tmp_path, [*FAST, *THREE_VAL_CASES,
                                             f"data.split.file={tmp_path}/splits.json"],
                         data_dir=shared_data_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    assert len(datamodule.split["val"]) == 3
    with torch.no_grad():
        per_case = torch.cat([
            dice(module.predict_logits(batch["image"]).argmax(1), batch["label"], 3)
            for batch in datamodule.val_dataloader()
        ])
    # The module's val/dice: per class the mean over cases where it is defined, then the mean
    # over classes. Label maps from the same weights on the same CPU: equal up to float sums.
    expected = per_case.nanmean(0).nanmean()
    assert metrics["val/dice"] == pytest.approx(float(expected), abs=1e-6)
    # Rank 0 alone scored cases 0 and 2 (rank 1 case 1); their mean is not what was logged.
    rank0_only = per_case[[0, 2]].nanmean(0).nanmean()
    assert metrics["val/dice"] != pytest.approx(float(rank0_only), abs=1e-6)


@pytest.mark.parametrize(("cases", "world_size", "shards"), [
    (3, 2, [[0, 2], [1]]),          # uneven: no case twice, none left out
    (4, 2, [[0, 2], [1, 3]]),
    (2, 3, [[0, 1], [0, 1], [0, 1]]),  # fewer cases than ranks: each rank scores them all
])
def test_validation_cases_are_sharded_without_repeats(train_config, cases, world_size, shards):
    datamodule = instantiate(train_config().data)
    got = []
    for rank in range(world_size):
        datamodule.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        got.append(list(datamodule._volume_sampler(list(range(cases)))))
    assert got == shards


def test_one_process_needs_no_sampler(train_config):
    datamodule = instantiate(train_config().data)
    assert datamodule._volume_sampler([0, 1, 2]) is None
    datamodule.trainer = SimpleNamespace(world_size=1, global_rank=0)
    assert datamodule._volume_sampler([0, 1, 2]) is None


def test_ranks_seeded_alike_draw_different_training_patches(train_config):
    datamodule = instantiate(train_config().data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    first = []
    for rank in range(2):
        torch.manual_seed(12345)  # what `seed` does in every rank
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        first.append(next(iter(datamodule.train_dataloader()))["image"])
    assert not torch.equal(*first)


def test_extra_ranks_run_this_job_in_its_folder(tmp_path):
    from volseg.engine.launch import rank_command

    compose_config("train", tmp_path, ["seed=3", "hydra.job_logging.root.level=WARNING"])
    command, _ = rank_command(1)
    assert "seed=3" in command and "hydra.job_logging.root.level=WARNING" in command
    assert f'hydra.run.dir="{tmp_path / "run"}"' in command
    assert "hydra.output_subdir=null" in command
    assert not any(c.startswith("hydra.mode") or c == "--multirun" for c in command)


def test_extra_ranks_run_volseg_train_with_the_users_config_folder(tmp_path):
    """Whatever started the job (the `volseg` script, train.py, a notebook), ranks run
    ``python -m volseg train``, and see the same ``--config-dir`` as rank 0."""
    from hydra.conf import ConfigSourceInfo
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from volseg.engine.launch import rank_command

    cfg = compose_config("train", tmp_path, ["seed=3"])
    with read_write(cfg.hydra):  # as --config-dir leaves it
        cfg.hydra.runtime.config_sources.append(ConfigSourceInfo(
            path=f"file://{tmp_path}/myconf", schema="file", provider="command-line"))
    HydraConfig().set_config(cfg)
    command, _ = rank_command(1)
    assert command[1:6] == ["-m", "volseg", "train", "--config-name", "train"]
    assert command[6:8] == ["--config-dir", f"{tmp_path}/myconf"]


def test_gpu_ddp_config_asks_for_ddp_and_sync_batchnorm(tmp_path):
    from pytorch_lightning.plugins import TorchSyncBatchNorm
    from pytorch_lightning.strategies import DDPStrategy

    cfg = compose_config("train", tmp_path, ["trainer=ddp"])
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.strategy == "ddp"
    assert cfg.trainer.sync_batchnorm is True
    assert cfg.trainer.devices == 2
    # No GPU here: the same trainer on CPU shows what the strategy and its layer sync become.
    trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32", logger=False)
    assert type(trainer.strategy) is DDPStrategy
    assert isinstance(trainer.strategy._layer_sync, TorchSyncBatchNorm)


@pytest.mark.slow
def test_ddp_in_a_multirun_makes_one_folder_per_job(tmp_path, shared_data_dir):
    _train_cli(tmp_path, shared_data_dir, "trainer.max_epochs=1", "seed=1,2", multirun=True)
    outputs = tmp_path / "outputs" / "train"
    assert not (outputs / "runs").exists()  # no rank started a run of its own
    sweeps = list((outputs / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and p.name != ".hydra")
    assert jobs == ["0", "1"]
    for job in jobs:
        metrics = json.loads((sweeps[0] / job / "metrics.json").read_text())
        assert metrics["status"] == "completed"
