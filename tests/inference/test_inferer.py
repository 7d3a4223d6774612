"""SlidingWindowInferer: one network call path for training's validation and for predict."""

import pytest
import torch
import torch.nn.functional as F

from volseg.inference.inferer import SlidingWindowInferer
from volseg.inference.sliding_window import sliding_window_inference


def test_settings_come_from_the_module_inference_mapping():
    inferer = SlidingWindowInferer.from_settings(
        {"tile_size": [8, 6, 4], "overlap": 0.25, "batch_size": 3, "mode": "constant"})
    assert inferer == SlidingWindowInferer((8, 6, 4), 0.25, "constant", 3)
    with pytest.raises(ValueError, match=r"module\.inference\.tile_size is missing"):
        SlidingWindowInferer.from_settings({"overlap": 0.5})
    with pytest.raises(ValueError, match=r"module\.inference: unknown setting\(s\) \['ovrlap'\]"):
        SlidingWindowInferer.from_settings({"tile_size": [8, 8, 8], "ovrlap": 0.5})


def test_overrides_replace_only_what_is_given():
    inferer = SlidingWindowInferer((8, 8, 8), overlap=0.5, batch_size=4)
    changed = inferer.with_overrides(tile_size=[16, 16, 8], overlap=None, batch_size=1)
    assert changed == SlidingWindowInferer((16, 16, 8), 0.5, "gaussian", 1)
    assert inferer.tile_size == (8, 8, 8)  # the original is untouched


def test_a_plain_network_equals_the_sliding_window_function():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    image = torch.randn(1, 2, 13, 11, 9)
    with torch.no_grad():
        got = SlidingWindowInferer((8, 8, 4), overlap=0.5, batch_size=2)(conv, image)
        expected = sliding_window_inference(conv, image, (8, 8, 4), overlap=0.5, batch_size=2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_deep_supervision_outputs_give_their_full_resolution_scale():
    def network(tiles):
        return [tiles * 2, tiles[..., ::2, ::2, ::2]]

    image = torch.rand(1, 1, 10, 9, 7)
    got = SlidingWindowInferer((6, 6, 4), mode="constant")(network, image)
    torch.testing.assert_close(got, image * 2)


class _ValidConvolution(torch.nn.Module):
    """A 3x3x3 mean filter without padding: it trims one voxel off every face of a tile."""

    def forward(self, tiles):
        return F.avg_pool3d(tiles, 3, stride=1)

    def output_shape(self, tile_size):
        return [t - 2 for t in tile_size]


def test_a_valid_padding_network_gets_its_context_padded_on():
    image = torch.rand(1, 1, 12, 10, 8)
    got = SlidingWindowInferer((12, 10, 8), mode="constant")(_ValidConvolution(), image)
    # One tile covers the image: the result is the mean filter of the edge-replicated image.
    expected = F.avg_pool3d(F.pad(image, [1] * 6, mode="replicate"), 3, stride=1)
    torch.testing.assert_close(got, expected)


def test_a_tile_the_network_does_not_map_onto_itself_is_named():
    def halving(tiles):
        return tiles[..., ::2, :, :]

    inferer = SlidingWindowInferer((8, 8, 8), key="predictor")
    with pytest.raises(ValueError, match=r"predictor\.tile_size=\[8, 8, 8\] gives a \(4, 8, 8\)"):
        inferer(halving, torch.rand(1, 1, 8, 8, 8))
