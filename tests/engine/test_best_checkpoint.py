"""BestCheckpoint on its own, with a stand-in trainer: the best checkpoint across a resume into
another folder. `tests/engine/test_resume.py` checks it in a real resumed run."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from volseg.engine.best_checkpoint import BestCheckpoint

ARGS = {"filename": "epoch_{epoch:03d}", "monitor": "val/dice", "mode": "max", "save_top_k": 1,
        "auto_insert_metric_name": False}


class StandInTrainer:
    """What ModelCheckpoint asks of the trainer to keep its best file; a save writes a note."""

    is_global_zero = True
    global_step = 0
    loggers: list = []
    ckpt_path = None

    def __init__(self) -> None:
        self.strategy = SimpleNamespace(
            broadcast=lambda obj, src=0: obj, barrier=lambda name=None: None,
            reduce_boolean_decision=lambda decision, all=True: decision,
            remove_checkpoint=lambda path: Path(path).unlink())

    def save_checkpoint(self, filepath: str, weights_only: bool = False) -> None:
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        Path(filepath).write_text(f"saved at step {self.global_step}")


def restored(tmp_path: Path, best_epoch: int = 1, score: float = 0.7) -> BestCheckpoint:
    """A BestCheckpoint in ``tmp_path/new`` restored from the state of one in ``tmp_path/old``
    whose best was ``epoch_<best_epoch>.ckpt`` at ``score``; training has started."""
    old = ModelCheckpoint(dirpath=tmp_path / "old", **ARGS)
    best = str(tmp_path / "old" / f"epoch_{best_epoch:03d}.ckpt")
    old.best_k_models = {best: torch.tensor(score)}
    old.best_model_path = old.kth_best_model_path = best
    old.best_model_score = old.kth_value = old.current_score = torch.tensor(score)
    callback = BestCheckpoint(dirpath=tmp_path / "new", **ARGS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "The dirpath has changed from ..."
        callback.load_state_dict(old.state_dict())
    callback.on_train_start(StandInTrainer(), None)  # type: ignore[arg-type]
    return callback


def validate(callback: BestCheckpoint, epoch: int, score: float) -> None:
    trainer = StandInTrainer()
    trainer.global_step = 4 * (epoch + 1)
    callback._save_topk_checkpoint(trainer, {"val/dice": torch.tensor(score),  # type: ignore
                                             "epoch": torch.tensor(epoch),
                                             "step": torch.tensor(trainer.global_step)})


def test_its_state_is_a_model_checkpoints():
    assert BestCheckpoint(**ARGS).state_key == ModelCheckpoint(**ARGS).state_key


def test_the_best_checkpoint_is_copied_into_the_new_folder_and_kept_until_beaten(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "epoch_001.ckpt").write_text("the best before the resume")
    callback = restored(tmp_path)
    copy = tmp_path / "new" / "epoch_001.ckpt"
    assert copy.read_text() == "the best before the resume"
    assert callback.best_model_path == callback.kth_best_model_path == str(copy)
    assert callback.best_k_models == {str(copy): pytest.approx(0.7)}
    assert float(callback.best_model_score) == float(callback.kth_value) == pytest.approx(0.7)

    validate(callback, epoch=3, score=0.5)  # worse than before the resume: not kept
    assert sorted(p.name for p in copy.parent.iterdir()) == ["epoch_001.ckpt"]
    validate(callback, epoch=4, score=0.9)
    assert sorted(p.name for p in copy.parent.iterdir()) == ["epoch_004.ckpt"]
    assert callback.best_model_path == str(tmp_path / "new" / "epoch_004.ckpt")
    assert (tmp_path / "old" / "epoch_001.ckpt").is_file()  # the old run's own stays


def test_a_best_checkpoint_that_is_gone_is_one_log_line_and_a_fresh_start(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="volseg.engine.best_checkpoint"):
        callback = restored(tmp_path)
    (record,) = caplog.records
    assert "epoch_001.ckpt of the resumed run is gone" in record.getMessage()
    assert callback.best_k_models == {} and callback.best_model_path == ""
    assert callback.best_model_score is None
    validate(callback, epoch=3, score=0.5)  # any score is now the best
    assert callback.best_model_path == str(tmp_path / "new" / "epoch_003.ckpt")


def test_a_moved_run_folder_keeps_its_own_best_checkpoint(tmp_path, caplog):
    # The run folder was moved: the state names the old place, the file is in the new one.
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "epoch_001.ckpt").write_text("moved along")
    with caplog.at_level(logging.WARNING):
        callback = restored(tmp_path)
    assert not caplog.records
    assert callback.best_model_path == str(tmp_path / "new" / "epoch_001.ckpt")
    assert (tmp_path / "new" / "epoch_001.ckpt").read_text() == "moved along"


def test_a_fit_with_no_epoch_left_still_has_the_old_best(tmp_path):
    old = ModelCheckpoint(dirpath=tmp_path / "old", **ARGS)
    old.best_model_path = str(tmp_path / "old" / "epoch_001.ckpt")
    callback = BestCheckpoint(dirpath=tmp_path / "new", **ARGS)
    callback.load_state_dict(old.state_dict())  # and no on_train_start: nothing to train
    assert callback.best_model_path == old.best_model_path
