"""Resuming a run: ``ckpt_path=last`` or a checkpoint continues it in its own folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

import volseg
from tests.conftest import FAST, compose_config
from volseg.runs.resolvers import find_last_checkpoint, resolve_ckpt_path, resume_dir

REPO = Path(__file__).resolve().parents[2]


class RecordTrainingState(pl.Callback):
    """Writes the epochs a fit ran and the state it started from to ``path`` (JSON)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict = {"epochs": []}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores a checkpoint before this hook: what it shows came back.
        optimizer = trainer.optimizers[0].state_dict()
        stopper = next(c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping))
        self.record["start"] = {
            "optimizer_step": float(optimizer["state"][0]["step"]) if optimizer["state"] else 0,
            "exp_avg_sum": float(optimizer["state"][0]["exp_avg"].sum())
            if optimizer["state"] else 0.0,
            "scheduler": _plain(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            "early_stopping_wait": int(stopper.wait_count),
            "early_stopping_best": float(stopper.best_score),
        }

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["epochs"].append(trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(json.dumps(self.record))


def _plain(state: dict) -> dict:
    """A scheduler's state as JSON-comparable values."""
    return {k: float(v) if isinstance(v, (int, float, torch.Tensor)) else v
            for k, v in state.items() if isinstance(v, (int, float, str, torch.Tensor))}


def _train_cli(tmp_path: Path, data_dir: Path, record: Path, *overrides: str) -> str:
    """Run train.py; returns what it printed."""
    command = [
        sys.executable, str(REPO / "train.py"), *FAST, "test=false",
        "module.surface_metrics=false", f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        # Never "improves" by 1.0 Dice: the early-stopping wait and the plateau scheduler's
        # bad-epoch count grow each epoch, so their restored values are not just the defaults.
        "callbacks.early_stopping.min_delta=1.0", "+scheduler.threshold=1.0",
        "+callbacks.record._target_=tests.engine.test_resume.RecordTrainingState",
        f"+callbacks.record.path={record}", *overrides,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _complete_history(run: Path, epochs: int, monitor: str) -> list[dict]:
    """``run``'s history.csv, checked to have one row per epoch with every number filled."""
    with (run / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == list(range(epochs))
    for row in rows:
        for key in ("lr", "train/loss_epoch", "val/loss", "val/dice", monitor):
            assert row[key] != "", f"epoch {row['epoch']}: no {key}"
    return rows


@pytest.mark.slow
def test_last_resumes_in_the_same_folder_with_optimizer_scheduler_and_early_stopping(
    tmp_path, shared_data_dir
):
    _train_cli(tmp_path, shared_data_dir, tmp_path / "first.json", "trainer.max_epochs=2")
    runs_dir = tmp_path / "outputs" / "train" / "runs"
    (run,) = runs_dir.iterdir()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)

    printed = _train_cli(tmp_path, shared_data_dir, tmp_path / "second.json",
                         "trainer.max_epochs=3", "ckpt_path=last")
    assert list(runs_dir.iterdir()) == [run]  # no second folder
    assert json.loads((tmp_path / "first.json").read_text())["epochs"] == [0, 1]
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["epochs"] == [2]  # only the new epoch ran
    start = second["start"]
    optimizer = saved["optimizer_states"][0]["state"][0]
    assert start["optimizer_step"] == float(optimizer["step"]) > 0
    assert start["exp_avg_sum"] == pytest.approx(float(optimizer["exp_avg"].sum()))
    assert start["scheduler"] == _plain(saved["lr_schedulers"][0])
    assert start["scheduler"]["num_bad_epochs"] > 0
    (stopper,) = [v for k, v in saved["callbacks"].items() if k.startswith("EarlyStopping")]
    assert start["early_stopping_wait"] == stopper["wait_count"] > 0
    assert start["early_stopping_best"] == pytest.approx(float(stopper["best_score"]))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["best_model_path"].startswith(str(run / "checkpoints"))
    # Resumed from the epoch-end last.ckpt of epoch 1: its training loss is in the history too.
    monitor = compose_config("train", tmp_path).callbacks.model_checkpoint.monitor
    _complete_history(run, 3, monitor)
    assert "dirpath has changed" not in printed

    # The same run resumed from a copy of its last.ckpt kept elsewhere: a new run folder, whose
    # best-checkpoint callback restores a state saved with another dirpath. The copy's weights
    # are zeroed, so the new epoch scores lowest: the best is an epoch before the resume.
    elsewhere = tmp_path / "elsewhere" / "last.ckpt"
    elsewhere.parent.mkdir()
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved["state_dict"] = {k: torch.zeros_like(v) for k, v in saved["state_dict"].items()}
    torch.save(saved, elsewhere)
    cfg = compose_config("train", tmp_path / "new", [
        *FAST, "test=false", "module.surface_metrics=false", "trainer.max_epochs=4",
        f"ckpt_path={elsewhere}"], data_dir=shared_data_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = volseg.train(cfg)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    new_run = Path(cfg.paths.output_dir)
    scores = [float(row[monitor]) for row in _complete_history(new_run, 4, monitor)]
    best = new_run / "checkpoints" / f"epoch_{scores.index(max(scores)):03d}.ckpt"
    assert scores.index(max(scores)) < 3
    assert Path(metrics["best_model_path"]) == best.resolve()
    assert sorted(p.name for p in best.parent.iterdir()) == sorted([best.name, "last.ckpt"])
    assert (run / "checkpoints" / best.name).is_file()  # copied, the old run's own stays
    final = torch.load(new_run / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    (record,) = [v for k, v in final["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(record["best_model_score"]) == pytest.approx(max(scores))


def _fake_run(runs_dir: Path, name: str, mtime: float) -> Path:
    checkpoint = runs_dir / name / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    os.utime(checkpoint, (mtime, mtime))
    return checkpoint


def test_last_is_the_most_recently_saved_last_checkpoint(tmp_path):
    _fake_run(tmp_path, "2026-01-02_00-00-00_1", mtime=1000)
    newest = _fake_run(tmp_path, "2026-01-01_00-00-00_2", mtime=2000)
    (tmp_path / "no_checkpoints").mkdir()
    assert find_last_checkpoint(tmp_path) == newest
    assert resolve_ckpt_path("last", tmp_path) == str(newest)


def test_resume_dir_is_the_checkpoints_run(tmp_path):
    checkpoint = _fake_run(tmp_path / "runs", "a", mtime=1000)
    new = str(tmp_path / "runs" / "new")
    assert resume_dir(new, str(checkpoint), True, str(tmp_path / "runs")) == str(
        checkpoint.parent.parent)
    assert resume_dir(new, "last", True, str(tmp_path / "runs")) == str(checkpoint.parent.parent)
    # Evaluation only, no checkpoint, or one outside a run's checkpoints/: a new folder.
    assert resume_dir(new, str(checkpoint), False, str(tmp_path / "runs")) == new
    assert resume_dir(new, None, True, str(tmp_path / "runs")) == new
    elsewhere = tmp_path / "model.ckpt"
    elsewhere.touch()
    assert resume_dir(new, str(elsewhere), True, str(tmp_path / "runs")) == new


@pytest.mark.parametrize("ckpt_path", ["last", "missing.ckpt"])
def test_a_missing_checkpoint_is_one_error_naming_ckpt_path(tmp_path, ckpt_path):
    # A SystemExit, so that the command line prints this one line (see resume_dir).
    with pytest.raises(SystemExit, match=f"^ckpt_path={ckpt_path}: [^\n]+$"):
        resume_dir("new", ckpt_path, True, str(tmp_path))


def test_the_hydra_run_dir_follows_ckpt_path(tmp_path):
    checkpoint = _fake_run(tmp_path / "outputs" / "train" / "runs", "a", mtime=1000)
    cfg = compose_config("train", tmp_path, ["ckpt_path=last"])
    assert OmegaConf.select(cfg, "hydra.run.dir") == str(checkpoint.parent.parent)
    cfg = compose_config("train", tmp_path, ["ckpt_path=last", "train=false"])
    assert OmegaConf.select(cfg, "hydra.run.dir").startswith(
        str(tmp_path / "outputs" / "train" / "runs" / "20"))
