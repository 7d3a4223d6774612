"""AllClassesReached: training ends in the validation round where the last class crosses."""

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from volseg.engine.callbacks import AllClassesReached

CLASSES = ["background", "bladder", "rectum", "prostate"]


def stub_trainer(**logged: float) -> SimpleNamespace:
    """What the callback reads of a fitting trainer: logged metrics, state, a 1-rank strategy."""
    return SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=False, fast_dev_run=False,
        callback_metrics={k: torch.tensor(v) for k, v in logged.items()}, should_stop=False,
        current_epoch=0, strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all: d),
    )


def dice(bladder: float, rectum: float, prostate: float) -> dict[str, float]:
    return {"val/dice_bladder": bladder, "val/dice_rectum": rectum,
            "val/dice_prostate": prostate, "val/dice": (bladder + rectum + prostate) / 3}


def test_stops_exactly_when_the_last_class_crosses():
    callback = AllClassesReached(threshold=0.7)
    module = SimpleNamespace(class_names=CLASSES)
    # The mean passes 0.7 at epoch 1, the prostate only at epoch 3 (NaN is not reached; a
    # float32 0.7 is, though it reads 0.69999999 as a Python float).
    history = [dice(0.5, 0.4, 0.1), dice(0.95, 0.9, 0.3), dice(0.9, 0.8, float("nan")),
               dice(0.9, 0.75, 0.7), dice(0.99, 0.99, 0.99)]
    stopped = []
    for epoch, logged in enumerate(history):
        trainer = stub_trainer(**logged)
        trainer.current_epoch = epoch
        callback.on_validation_end(trainer, module)
        stopped.append(trainer.should_stop)
        if trainer.should_stop:
            break
    assert stopped == [False, False, False, True]
    assert callback.state_dict() == {"stopped_epoch": 3}


def test_sanity_check_validate_and_explicit_classes():
    module = SimpleNamespace(class_names=CLASSES)
    trainer = stub_trainer(**dice(0.9, 0.9, 0.9))
    trainer.sanity_checking = True
    AllClassesReached().on_validation_end(trainer, module)
    trainer.sanity_checking, trainer.state.fn = False, TrainerFn.VALIDATING
    AllClassesReached().on_validation_end(trainer, module)
    assert not trainer.should_stop
    # Only the listed classes count, and another prefix reads another metric.
    trainer = stub_trainer(**{"val/nsd_bladder": 0.8, "val/nsd_rectum": 0.2})
    AllClassesReached(0.8, "val/nsd_", ["bladder"]).on_validation_end(trainer, module)
    assert trainer.should_stop


def test_missing_metric_names_what_was_logged():
    trainer = stub_trainer(**{"val/dice_bladder": 0.9, "val/dice": 0.9})
    with pytest.raises(KeyError, match=r"\['val/dice_rectum', 'val/dice_prostate'\] not logged"):
        AllClassesReached().on_validation_end(trainer, SimpleNamespace(class_names=CLASSES))
    with pytest.raises(ValueError, match="no foreground class_names"):
        AllClassesReached().on_validation_end(trainer, SimpleNamespace(class_names=["bg"]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 1.5}, "threshold must be a number in"),
    ({"threshold": "0.7"}, "threshold must be a number in"),
    ({"metric_prefix": ""}, "metric_prefix must be a non-empty string"),
    ({"class_names": "prostate"}, "class_names must be a non-empty list"),
    ({"class_names": []}, "class_names must be a non-empty list"),
    ({"class_names": ["rectum", "rectum"]}, "class_names has duplicates"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AllClassesReached(**kwargs)
