"""PredictionSettings: predict's options, checked once and named when wrong."""

import pytest
import torch
from omegaconf import OmegaConf

from volseg.inference.settings import PredictionSettings


def test_defaults_and_plain_values_from_hydra():
    node = OmegaConf.create({"tile_size": [8, 8, 4], "tta_axes": [2, 0, 2], "precision": 16})
    settings = PredictionSettings(**node)
    assert settings.tile_size == [8, 8, 4] and type(settings.tile_size) is list
    assert settings.tta_axes == [0, 2]
    assert settings.autocast_dtype is torch.float16
    assert PredictionSettings().autocast_dtype is None


@pytest.mark.parametrize(("options", "named"), [
    ({"precision": "fp8"}, "precision"),
    ({"mc_dropout": -1}, "mc_dropout"),
    ({"mc_dropout": True}, "mc_dropout"),
    ({"uncertainty": "spread"}, "uncertainty"),
    ({"connectivity": 8}, "connectivity"),
    ({"tta_axes": [3]}, "tta_axes"),
    ({"tile_size": [64, 64]}, "tile_size"),
    ({"tile_size": [64, 0, 64]}, "tile_size"),
    ({"overlap": 1.0}, "overlap"),
    ({"batch_size": 0}, "batch_size"),
])
def test_a_bad_option_is_named(options, named):
    with pytest.raises(ValueError, match=named):
        PredictionSettings(**options)


def test_largest_component_classes_against_the_class_count():
    assert PredictionSettings(keep_largest_component=True).largest_component_classes(3) == [1, 2]
    assert PredictionSettings().largest_component_classes(3) == []
    with pytest.raises(ValueError, match=r"keep_largest_component: classes must be in 1\.\.2"):
        PredictionSettings(keep_largest_component=[3]).largest_component_classes(3)
