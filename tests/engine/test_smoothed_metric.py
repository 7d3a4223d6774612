from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.trainer.states import TrainerFn

from volseg.engine.smoothed_metric import SmoothedMetric


class _Logger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, metrics))


def _trainer(value, step=10, sanity=False, fn=TrainerFn.FITTING):
    return SimpleNamespace(callback_metrics={"val/dice": torch.tensor(value)},
                           sanity_checking=sanity, state=SimpleNamespace(fn=fn),
                           loggers=[_Logger()], global_step=step)


def _round(callback, value, **kwargs):
    trainer = _trainer(value, **kwargs)
    callback.on_validation_end(trainer, None)
    return trainer


def test_each_round_blends_the_previous_value_worked_by_hand():
    callback = SmoothedMetric(decay=0.5)
    published = [float(_round(callback, v).callback_metrics["val/dice_ema"])
                 for v in (0.2, 0.6, float("nan"), 1.0)]
    # 0.2; 0.5*0.2 + 0.5*0.6 = 0.4; a NaN round keeps 0.4; 0.5*0.4 + 0.5*1.0 = 0.7
    assert published == pytest.approx([0.2, 0.4, 0.4, 0.7])


def test_the_loggers_get_the_value_and_sanity_checks_and_tests_are_skipped():
    callback = SmoothedMetric(monitor="val/dice", name="smooth", decay=0.9)
    trainer = _round(callback, 0.5, step=7)
    assert trainer.loggers[0].logged == [(7, {"smooth": 0.5})]
    skipped = [_round(callback, 0.0, sanity=True), _round(callback, 0.0, fn=TrainerFn.TESTING)]
    assert all("smooth" not in t.callback_metrics for t in skipped)
    assert callback.value == 0.5


def test_state_carries_across_a_resume():
    first = SmoothedMetric(decay=0.5)
    _round(first, 0.8)
    resumed = SmoothedMetric(decay=0.5)
    resumed.load_state_dict(first.state_dict())
    assert float(_round(resumed, 0.4).callback_metrics["val/dice_ema"]) == pytest.approx(0.6)


def test_bad_settings_name_their_key():
    with pytest.raises(ValueError, match="callbacks.smoothed_metric.decay"):
        SmoothedMetric(decay=1.0)
    trainer = _trainer(0.5)
    with pytest.raises(KeyError, match="val/dsc"):
        SmoothedMetric(monitor="val/dsc").on_validation_end(trainer, None)
