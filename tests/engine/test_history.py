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

from volseg.engine.history import TrainingHistory, history_figure, plot_history


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def stand_in_trainer(epoch: int = 0, lr: float = 0.01) -> SimpleNamespace:
    """What the hooks read off the trainer; a new one is a new process: nothing logged yet."""
    optimizer = SimpleNamespace(param_groups=[{"lr": lr}])
    return SimpleNamespace(current_epoch=epoch, callback_metrics={}, optimizers=[optimizer],
                           sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING))


def run_epoch(callback: TrainingHistory, trainer: SimpleNamespace, validate: bool = True,
              started: bool = True) -> dict:
    """Call one epoch's hooks; returns the numbers 'logged'. ``started=False``: an epoch that
    Lightning restarts from a checkpoint, without on_train_epoch_start."""
    epoch, group = trainer.current_epoch, trainer.optimizers[0].param_groups[0]
    if started:
        callback.on_train_epoch_start(trainer, None)
    numbers = {"epoch": epoch, "lr": group["lr"]}
    if validate:
        val = {"val/loss": 1.0 / (epoch + 1), "val/dice": 0.1 * epoch,
               "val/dice_organ": 0.2 * epoch, "val/dice_lesion": float("nan")}
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in val.items()})
        callback.on_validation_end(trainer, None)
        numbers.update(val, **{"val/dice_lesion": None})
    # Read in on_train_epoch_end, callback_metrics holds the epoch's training means
    # (Lightning computes them when read; it stores them only after the epoch-end hooks).
    loss = 2.0 - 0.1 * epoch
    trainer.callback_metrics.update({"train/loss_epoch": torch.tensor(loss),
                                     "train/loss": torch.tensor(loss),
                                     "train/loss_step": torch.tensor(9.0)})
    callback.on_train_epoch_end(trainer, None)
    numbers["train/loss_epoch"] = loss
    group["lr"] *= 0.5
    trainer.current_epoch += 1
    return numbers


def run_epochs(callback: TrainingHistory, epochs: int, validate_every: int = 1) -> list[dict]:
    """Call the hooks as a fit of ``epochs`` epochs would; returns the numbers 'logged'."""
    trainer = stand_in_trainer()
    trainer.sanity_checking = True
    trainer.callback_metrics = {"val/dice": torch.tensor(0.01)}
    callback.on_validation_end(trainer, None)  # sanity check: not an epoch
    trainer.sanity_checking = False
    callback.on_train_start(trainer, None)
    logged = [run_epoch(callback, trainer, validate=(epoch + 1) % validate_every == 0)
              for epoch in range(epochs)]
    callback.on_train_end(trainer, None)
    # A validate() after fit must not add a row.
    trainer.state.fn = TrainerFn.VALIDATING
    callback.on_validation_end(trainer, None)
    callback.on_fit_end(trainer, None)
    return logged


def assert_rows(rows: list[dict], logged: list[dict]) -> None:
    assert len(rows) == len(logged)
    for row, numbers in zip(rows, logged):
        assert row.keys() == numbers.keys()
        for key, value in numbers.items():
            assert row[key] == (None if value is None else pytest.approx(value)), key


def test_one_row_per_epoch_with_the_logged_numbers(tmp_path):
    callback = TrainingHistory(tmp_path)
    logged = run_epochs(callback, epochs=3)
    assert_rows(json.loads((tmp_path / "history.json").read_text()), logged)
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


def test_a_run_resumed_from_an_epoch_end_checkpoint_has_every_epochs_numbers(tmp_path):
    # last.ckpt is written at the epoch's end, after this callback's hook; the resumed process
    # starts with nothing logged, so the finished epoch's training loss must be in the state.
    first = TrainingHistory(tmp_path)
    trainer = stand_in_trainer()
    first.on_train_start(trainer, None)
    logged = [run_epoch(first, trainer) for _ in range(2)]
    resumed = TrainingHistory(tmp_path)
    resumed.load_state_dict(first.state_dict())
    trainer = stand_in_trainer(epoch=2, lr=0.0025)  # the restored scheduler's rate
    resumed.on_train_start(trainer, None)
    logged.append(run_epoch(resumed, trainer))
    resumed.on_train_end(trainer, None)
    assert_rows(resumed.history(), logged)


@pytest.mark.parametrize("saved_at", ["mid-epoch", "last batch"])
def test_an_epoch_lightning_does_not_start_again_still_gets_its_learning_rate(tmp_path,
                                                                              saved_at):
    first = TrainingHistory(tmp_path)
    trainer = stand_in_trainer()
    first.on_train_start(trainer, None)
    logged = [run_epoch(first, trainer)]
    first.on_train_epoch_start(trainer, None)  # epoch 1 starts; last.ckpt is written in it
    resumed = TrainingHistory(tmp_path)
    resumed.load_state_dict(first.state_dict())
    if saved_at == "last batch":
        # An older last.ckpt written at epoch 1's last batch: Lightning counts epoch 1 as done
        # (it is not validated) and resumes in epoch 2, without its on_train_epoch_start.
        trainer = stand_in_trainer(epoch=2, lr=0.0025)
        logged.append({"epoch": 1, "lr": 0.005})
    else:
        trainer = stand_in_trainer(epoch=1, lr=0.005)
    resumed.on_train_start(trainer, None)
    logged.append(run_epoch(resumed, trainer, started=False))
    resumed.on_train_end(trainer, None)
    rows = resumed.history()
    assert [row["lr"] for row in rows] == pytest.approx([row["lr"] for row in logged])
    assert_rows(rows[-1:], logged[-1:])


def test_plot_copes_with_no_rows(tmp_path):
    path = plot_history([], tmp_path / "empty.png", title="nothing yet")
    assert png_size(path)[0] > 0


def test_the_dice_panel_names_classes_and_draws_the_other_means_apart():
    rows = [{"epoch": e, "val/dice": 0.5 + e / 10, "val/dice_ema": 0.5, "val/dice_organ": 0.9,
             "val/dice_postprocessed": 0.6, "val/dice_lesion": 0.1 * e} for e in range(3)]
    _, dice_axes = history_figure(rows).axes
    lines = {line.get_label(): line for line in dice_axes.get_lines()}
    assert list(lines) == ["mean", "mean, smoothed", "mean, post-processed", "organ", "lesion"]
    assert [lines[k].get_linestyle() for k in list(lines)[:3]] == ["-", "--", ":"]
    assert lines["mean"].get_linewidth() > lines["organ"].get_linewidth()
