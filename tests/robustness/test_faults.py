"""Faults lose nothing: kill -9 and resume, crashes mid-write, NaN losses, identical reruns."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import SimpleITK as sitk
import torch
from hydra.utils import instantiate

from tests.conftest import FAST, compose_config
from tests.engine.test_resume import _plain
from tests.inference.conftest import make_checkpoint, oblique_volume
from volseg.engine.checkpoint_io import AtomicCheckpointIO
from volseg.engine.predict import predict_cases
from volseg.engine.rng_state import RNGState
from volseg.engine.train import train
from volseg.io import write_volume

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 4  # FAST: data.samples_per_epoch=8, data.batch_size=2


# --- kill -9 mid-epoch, then ckpt_path=last ---------------------------------------------------


class PauseAtStep(pl.Callback):
    """Writes ``marker`` and sleeps once ``global_step`` reaches ``step``: a run to kill there.

    Lightning runs checkpoint callbacks after the others, so at this point ``last.ckpt``
    holds step ``step - 1``.
    """

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            self.marker.touch()
            time.sleep(300)


class RecordResume(pl.Callback):
    """Writes what a fit started from and where it ended to ``path`` (JSON)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict = {"epochs": []}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After RNGState's on_train_start (it comes first in the callbacks): restored state.
        optimizer = trainer.optimizers[0].state_dict()["state"][0]
        stopper = next(c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping))
        self.record["start"] = {
            "global_step": trainer.global_step,
            "optimizer_step": float(optimizer["step"]),
            "exp_avg_sum": float(optimizer["exp_avg"].sum()),
            "scheduler": _plain(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            "early_stopping_wait": int(stopper.wait_count),
            "early_stopping_best": float(stopper.best_score),
            "torch_rng": torch.get_rng_state().tolist(),
        }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_train_epoch_start: Lightning does not call it again for a resumed epoch.
        self.record["epochs"].append(trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["end_global_step"] = trainer.global_step
        self.path.write_text(json.dumps(self.record))


def _command(tmp_path: Path, data_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), *FAST, "test=false", "trainer.max_epochs=3",
        "module.surface_metrics=false", f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}", "callbacks.last_checkpoint.every_n_train_steps=1",
        # Never "improves" by 1.0 Dice: the early-stopping wait and the plateau scheduler's
        # bad-epoch count grow, so their restored values are not just the defaults.
        "callbacks.early_stopping.min_delta=1.0", "+scheduler.threshold=1.0", *overrides,
    ]


@pytest.mark.slow
def test_kill_9_mid_epoch_then_last_resumes_from_the_saved_step(tmp_path, shared_data_dir):
    marker = tmp_path / "paused"
    # Epoch 2 (of 0..2), after its third batch: last.ckpt has the second. Two validation
    # rounds have passed, so early stopping has something to remember.
    kill_at = 2 * STEPS_PER_EPOCH + 3
    process = subprocess.Popen(
        _command(tmp_path, shared_data_dir,
                 "+callbacks.pause._target_=tests.robustness.test_faults.PauseAtStep",
                 f"+callbacks.pause.step={kill_at}", f"+callbacks.pause.marker={marker}"),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "training never reached the step to kill at"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    runs_dir = tmp_path / "outputs" / "train" / "runs"
    (run,) = runs_dir.iterdir()
    assert not (run / "metrics.json").exists()  # it really died mid-run
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == kill_at - 1  # mid-epoch: epoch 2, two of four batches
    assert saved["epoch"] == 2

    record = tmp_path / "resumed.json"
    done = subprocess.run(
        _command(tmp_path, shared_data_dir, "ckpt_path=last",
                 "+callbacks.record._target_=tests.robustness.test_faults.RecordResume",
                 f"+callbacks.record.path={record}"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(runs_dir.iterdir()) == [run]  # the same run folder
    resumed = json.loads(record.read_text())
    start = resumed["start"]
    assert start["global_step"] == saved["global_step"]
    optimizer = saved["optimizer_states"][0]["state"][0]
    assert start["optimizer_step"] == float(optimizer["step"]) == kill_at - 1
    assert start["exp_avg_sum"] == pytest.approx(float(optimizer["exp_avg"].sum()))
    assert start["scheduler"] == _plain(saved["lr_schedulers"][0])
    (stopper,) = [v for k, v in saved["callbacks"].items() if k.startswith("EarlyStopping")]
    assert start["early_stopping_wait"] == stopper["wait_count"] == 1
    assert start["early_stopping_best"] == pytest.approx(float(stopper["best_score"]))
    assert start["torch_rng"] == saved["callbacks"]["RNGState"]["torch"].tolist()
    # The interrupted epoch is finished, not restarted, and the run ends where an
    # uninterrupted one does: 3 epochs of 4 steps.
    assert resumed["epochs"] == [2]
    assert resumed["end_global_step"] == 3 * STEPS_PER_EPOCH
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs"] == 3
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 3 * STEPS_PER_EPOCH


def test_rng_state_round_trips_and_loads_weights_only(tmp_path):
    import random

    import numpy as np

    pl.seed_everything(3)
    state = RNGState().state_dict()
    torch.save({"rng": state}, tmp_path / "state.ckpt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    callback = RNGState()
    callback.load_state_dict(torch.load(tmp_path / "state.ckpt", weights_only=True)["rng"])
    callback.on_train_start(None, None)  # type: ignore[arg-type]
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# --- a crash while a checkpoint or prediction is being written --------------------------------


def _crash_halfway(obj: object, file, *args: object, **kwargs: object) -> None:
    file.write(b"PK\x03\x04 the first half of a checkpoint")
    raise OSError("disk full (simulated)")


def test_trainer_writes_checkpoints_with_the_atomic_plugin(tmp_path, shared_data_dir):
    cfg = compose_config("train", tmp_path, FAST, data_dir=shared_data_dir)
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_crash_mid_checkpoint_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint({"global_step": 1, "weight": torch.ones(3)}, path)

    monkeypatch.setattr(torch, "save", _crash_halfway)
    with pytest.raises(OSError, match="simulated"):
        checkpoint_io.save_checkpoint({"global_step": 2, "weight": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1  # the complete previous one
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]

    first = tmp_path / "new" / "epoch_000.ckpt"
    with pytest.raises(OSError, match="simulated"):
        checkpoint_io.save_checkpoint({"global_step": 1}, first)
    assert list(first.parent.iterdir()) == []  # never a half file under the final name


def test_a_crash_mid_prediction_leaves_no_file(tmp_path, monkeypatch):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "a.nii.gz")
    write_image = sitk.WriteImage

    def crash_halfway(image: sitk.Image, path: str, *args: object, **kwargs: object) -> None:
        write_image(image, path, *args, **kwargs)
        with open(path, "r+b") as file:  # what a kill mid-write leaves: a truncated file
            file.truncate(os.path.getsize(path) // 2)
        raise OSError("killed (simulated)")

    monkeypatch.setattr(sitk, "WriteImage", crash_halfway)
    summary = predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    assert [case for case, _ in summary["failed"]] == ["a"]
    assert summary["written"] == []
    assert list((tmp_path / "out").iterdir()) == []


# --- NaN / inf loss ---------------------------------------------------------------------------


class PoisonBatch(pl.Callback):
    """Fills the image of training batch ``batch_idx`` (every epoch) with ``value``."""

    def __init__(self, batch_idx: int, value: float = math.nan) -> None:
        self.batch_idx, self.value = batch_idx, value

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: dict, batch_idx: int) -> None:
        if batch_idx == self.batch_idx:
            batch["image"].fill_(self.value)


def _poisoned(train_config, *overrides: str):
    return train_config(
        "test=false", "module.surface_metrics=false", "callbacks.prediction_writer=null",
        "+callbacks.poison._target_=tests.robustness.test_faults.PoisonBatch",
        "+callbacks.poison.batch_idx=1", *overrides,
    )


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_nonfinite_loss_stops_training_naming_the_step_and_batch(train_config, value):
    cfg = _poisoned(train_config, f"+callbacks.poison.value={value}")
    with pytest.raises(FloatingPointError,
                       match=r"^training loss is (nan|inf) at global step 1 \(epoch 0, batch 1\); "
                             r".*module.nonfinite_loss=skip"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_nonfinite_loss_is_skipped_when_configured(train_config, caplog, monkeypatch):
    from volseg.engine.module import SegmentationModule

    modules: list[SegmentationModule] = []
    monkeypatch.setattr(SegmentationModule, "on_train_end",
                        lambda self: modules.append(self), raising=False)
    cfg = _poisoned(train_config, "module.nonfinite_loss=skip")
    with caplog.at_level("WARNING", logger="volseg.engine.module"):
        metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    (module,) = modules
    assert module.skipped_batches == 2  # batch 1 of each of the two epochs
    # Nothing learnt from the NaN batches: weights and normalisation statistics are finite.
    assert all(torch.isfinite(p).all() for p in module.state_dict().values())
    assert math.isfinite(metrics["val/loss"])
    skipped = [r.getMessage() for r in caplog.records if "batch skipped" in r.getMessage()]
    assert skipped == [
        "training loss is nan at global step 1 (epoch 0, batch 1): batch skipped (1 so far)",
        "training loss is nan at global step 5 (epoch 1, batch 1): batch skipped (2 so far)",
    ]


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_seeded_deterministic_cpu_runs_give_identical_metrics(tmp_path, shared_data_dir):
    runs = []
    for name in ("first", "second"):
        cfg = compose_config("train", tmp_path / name,
                             [*FAST, "seed=7", "trainer.deterministic=true"],
                             data_dir=shared_data_dir)
        train(cfg)
        metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
        metrics.pop("wall_time_s")
        metrics["best_model_path"] = Path(metrics["best_model_path"]).name
        runs.append(metrics)
    assert runs[0] == runs[1]
    assert len(runs[0]) > 10  # val/ and test/ metrics, not just the bookkeeping
