"""TensorBoard overlays and hparams, written through a real TensorBoardLogger and read back
with tensorboard's own EventAccumulator. The trainer is a stand-in holding only what the
callbacks read; `tests/test_api.py` checks the same tags after a real training run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from volseg.engine.tensorboard_logging import (
    HyperparameterLogger,
    ValidationImageLogger,
    scalar_hparams,
)
from volseg.io.overlay import overlay_picture


def fake_trainer(loggers: list, epoch: int = 0, max_epochs: int = 10, **extra) -> SimpleNamespace:
    return SimpleNamespace(loggers=loggers, current_epoch=epoch, max_epochs=max_epochs,
                           sanity_checking=False, global_step=7 * (epoch + 1), is_global_zero=True,
                           state=SimpleNamespace(fn=TrainerFn.FITTING), **extra)


def validation_batch(case_id: str = "case_1") -> tuple[dict, dict]:
    """A 24x20x16 volume with a box labelled 1, and a prediction shifted by two voxels."""
    rng = np.random.default_rng(0)
    label = torch.zeros(1, 24, 20, 16, dtype=torch.long)
    label[0, 6:14, 5:12, 4:10] = 1
    prediction = torch.roll(label, 2, dims=1)
    batch = {"image": torch.from_numpy(rng.normal(size=(1, 1, 24, 20, 16)).astype(np.float32)),
             "label": label, "case_id": case_id,
             "meta": {"preprocessed": {"spacing": [1.0, 1.0, 2.0]}}}
    return batch, {"prediction": prediction}


def read_events(folder: Path) -> EventAccumulator:
    (events,) = folder.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_overlay_image_is_the_evaluate_picture_at_the_global_step(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version="")
    callback = ValidationImageLogger(every_n_epochs=2, max_cases=1)
    batch, outputs = validation_batch()
    for epoch in range(4):
        trainer = fake_trainer([logger], epoch=epoch, max_epochs=4)
        callback.on_validation_batch_end(trainer, None, outputs, batch, batch_idx=0)
        # Beyond max_cases: not drawn.
        callback.on_validation_batch_end(trainer, None, outputs, {**batch, "case_id": "x"}, 1)
    logger.experiment.flush()
    events = read_events(tmp_path)
    assert events.Tags()["images"] == ["val/overlay/case_1"]
    images = events.Images("val/overlay/case_1")
    assert [i.step for i in images] == [14, 28]  # epochs 2 and 4 (1-based)
    expected = overlay_picture(batch["image"][0, 0].numpy(), batch["label"][0].numpy(),
                               outputs["prediction"][0].numpy(), [1.0, 1.0, 2.0])
    assert (images[0].height, images[0].width) == expected.shape[:2]


@pytest.mark.parametrize("when", ["sanity", "validate", "off_epoch"])
def test_no_overlay_outside_fitting_rounds(tmp_path, when):
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = fake_trainer([logger], epoch=0, max_epochs=10)
    if when == "sanity":
        trainer.sanity_checking = True
    elif when == "validate":
        trainer.state.fn = TrainerFn.VALIDATING
    callback = ValidationImageLogger(every_n_epochs=1 if when != "off_epoch" else 3)
    callback.on_validation_batch_end(trainer, None, validation_batch()[1], validation_batch()[0],
                                     0)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_without_tensorboard_the_callbacks_do_nothing(tmp_path):
    trainer = fake_trainer([CSVLogger(tmp_path)], callback_metrics={"test/dice": 0.5})
    batch, outputs = validation_batch()
    ValidationImageLogger(every_n_epochs=1).on_validation_batch_end(trainer, None, outputs,
                                                                    batch, 0)
    HyperparameterLogger().on_test_end(trainer, SimpleNamespace(hparams={"a": 1}))
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="every_n_epochs"):
        ValidationImageLogger(every_n_epochs=0)
    with pytest.raises(ValueError, match="max_cases"):
        ValidationImageLogger(max_cases=-1)


def test_scalar_hparams_flattens_and_stringifies():
    params = {"net": {"_target_": "x.Net", "features": 8, "channels": [1, 2]}, "lr": 0.1,
              "scheduler": None, "channels_last": True}
    assert scalar_hparams(params) == {"net/_target_": "x.Net", "net/features": 8,
                                      "net/channels": "[1, 2]", "lr": 0.1,
                                      "scheduler": "None", "channels_last": True}


@pytest.mark.parametrize("wait_for_test", [True, False])
def test_hparams_written_once_with_the_final_metrics(tmp_path, wait_for_test):
    logger = TensorBoardLogger(tmp_path, name="", version="", default_hp_metric=False)
    module = SimpleNamespace(hparams={"net": {"features": 4}, "class_names": ["bg", "a"]})
    callback = HyperparameterLogger(wait_for_test=wait_for_test)
    trainer = fake_trainer([logger], callback_metrics={"val/dice": torch.tensor(0.25),
                                                       "train/loss": torch.tensor(1.0)})
    callback.on_validation_end(trainer, module)
    trainer.callback_metrics["val/dice"] = torch.tensor(0.5)  # the last round counts
    callback.on_validation_end(trainer, module)
    callback.on_fit_end(trainer, module)
    trainer.callback_metrics = {"test/dice": torch.tensor(0.4), "test/hd95": torch.tensor(
        float("nan"))}
    callback.on_test_end(trainer, module)
    logger.experiment.flush()
    events = read_events(tmp_path)
    assert set(events.PluginTagToContent("hparams")) == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    expected = {"hparams/val/dice": 0.5}
    if wait_for_test:
        expected["hparams/test/dice"] = 0.4  # NaN (undefined) metrics are left out
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, value in expected.items():
        assert [s.value for s in events.Scalars(tag)] == pytest.approx([value])
    content = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["net/features"].number_value == 4
    assert session.session_start_info.hparams["class_names"].string_value == "['bg', 'a']"
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(expected)
