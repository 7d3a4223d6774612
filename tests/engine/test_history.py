"""TrainingHistory driven through the hooks Lightning calls, in Lightning's order, with a
stand-in trainer; `tests/test_api.py` checks the files of a real run against TensorBoard."""

from __future__ import annotations

import csv
import json
import struct
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from volseg.engine.history import TrainingHistory, plot_history


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def run_epochs(callback: TrainingHistory, epochs: int, validate_every: int = 1) -> list[dict]:
    """Call the hooks as a fit of ``epochs`` epochs would; returns the numbers 'logged'."""
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.01}])
    trainer = SimpleNamespace(current_epoch=0, callback_metrics={}, optimizers=[optimizer],
                              sanity_checking=True, state=SimpleNamespace(fn=TrainerFn.FITTING))
    trainer.callback_metrics = {"val/dice": torch.tensor(0.01)}
    callback.on_validation_end(trainer, None)  # sanity check: not an epoch
    trainer.sanity_checking = False
    logged = []
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, None)
        numbers = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % validate_every == 0:
            val = {"val/loss": 1.0 / (epoch + 1), "val/dice": 0.1 * epoch,
                   "val/dice_organ": 0.2 * epoch, "val/dice_lesion": float("nan")}
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in val.items()})
            callback.on_validation_end(trainer, None)
            numbers.update(val, **{"val/dice_lesion": None})
        # Lightning updates the epoch's training loss after the epoch-end hooks.
        loss = 2.0 - 0.1 * epoch
        trainer.callback_metrics.update({"train/loss_epoch": torch.tensor(loss),
                                         "train/loss": torch.tensor(loss),
                                         "train/loss_step": torch.tensor(9.0)})
        numbers["train/loss_epoch"] = loss
        optimizer.param_groups[0]["lr"] *= 0.5
        logged.append(numbers)
    trainer.current_epoch = epochs
    callback.on_train_end(trainer, None)
    # A validate() after fit must not add a row.
    trainer.state.fn = TrainerFn.VALIDATING
    callback.on_validation_end(trainer, None)
    callback.on_fit_end(trainer, None)
    return logged


def test_one_row_per_epoch_with_the_logged_numbers(tmp_path):
    callback = TrainingHistory(tmp_path)
    logged = run_epochs(callback, epochs=3)
    rows = json.loads((tmp_path / "history.json").read_text())
    assert len(rows) == 3
    for row, numbers in zip(rows, logged):
        assert row.keys() == numbers.keys()
        for key, value in numbers.items():
            assert row[key] == (None if value is None else pytest.approx(value)), key
    with (tmp_path / "history.csv").open() as file:
        table = list(csv.DictReader(file))
    assert [float(r["train/loss_epoch"]) for r in table] == pytest.approx([2.0, 1.9, 1.8])
    assert table[0]["val/dice_lesion"] == ""  # undefined metric: empty cell
    width, height = png_size(tmp_path / "training_history.png")
    assert width >= 600 and height >= 300


def test_epochs_without_validation_have_no_validation_numbers(tmp_path):
    callback = TrainingHistory(tmp_path)
    run_epochs(callback, epochs=4, validate_every=2)
    rows = callback.history()
    assert ["val/dice" in r for r in rows] == [False, True, False, True]
    assert all("train/loss_epoch" in r for r in rows)


def test_history_survives_a_checkpoint_round_trip(tmp_path):
    callback = TrainingHistory(tmp_path)
    run_epochs(callback, epochs=2)
    resumed = TrainingHistory(tmp_path)
    resumed.load_state_dict(callback.state_dict())
    assert resumed.history() == callback.history()


def test_plot_copes_with_no_rows(tmp_path):
    path = plot_history([], tmp_path / "empty.png", title="nothing yet")
    assert png_size(path)[0] > 0
