"""Checkpoints -> trained networks: what inference receives, and what an ensemble refuses."""

import pytest
import torch

from tests.inference.conftest import make_checkpoint
from volseg.engine.checkpoint_loading import load_module, load_networks
from volseg.inference.inferer import SlidingWindowInferer


def test_a_checkpoint_gives_its_network_preprocessing_and_settings(tmp_path):
    choice = {"largest_foreground": True, "largest_component": [2], "connectivity": 6}
    path = make_checkpoint(tmp_path / "m.ckpt", regions={"masses": [1, 2]},
                           postprocessing=choice)
    (trained,) = load_networks(path)
    module = load_module(path)
    assert trained.inferer == SlidingWindowInferer((16, 16, 8), overlap=0.5)
    assert trained.class_names == module.class_names and trained.in_channels == 1
    assert trained.preprocessor.to_dict() == module.preprocessor.to_dict()
    assert trained.regions == {"masses": [1, 2]} and trained.postprocessing == choice
    assert not trained.network.training
    image = torch.rand(1, 1, 20, 18, 9)
    with torch.no_grad():
        torch.testing.assert_close(trained.logits(image), module.predict_logits(image))


def test_an_ensemble_needs_the_same_input_channels(tmp_path):
    first = make_checkpoint(tmp_path / "a.ckpt")
    second = make_checkpoint(tmp_path / "b.ckpt", in_channels=2)
    with pytest.raises(ValueError, match=r"b\.ckpt: in_channels 2 differ from .*a\.ckpt's 1"):
        load_networks([first, second])


def test_no_checkpoint_is_named():
    with pytest.raises(ValueError, match="ckpt_path: no checkpoint given"):
        load_networks([])
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt: no such checkpoint"):
        load_networks("nowhere.ckpt")
