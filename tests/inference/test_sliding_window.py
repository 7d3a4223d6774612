"""Sliding-window inference against MONAI's implementation and hand-worked layouts."""

import itertools

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference as monai_sliding_window_inference

from volseg.inference import sliding_window_inference
from volseg.inference.sliding_window import gaussian_importance_map, tile_starts

TILE = (16, 16, 16)


def _conv_network(in_channels: int = 2, out_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1).eval()


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (37, 16, 0.5, [0, 8, 16, 21]),  # step 8; the last tile is pulled back to end at 37
        (29, 16, 0.5, [0, 8, 13]),
        (23, 16, 0.5, [0, 7]),
        (37, 16, 0.25, [0, 12, 21]),  # step int(16 * 0.75) = 12
        (32, 16, 0.5, [0, 8, 16]),  # 16 + 16 ends exactly at 32: no duplicate start
        (16, 16, 0.5, [0]),
        (5, 4, 0.9, [0, 1]),  # int(4 * 0.1) = 0 -> step 1
        (10, 3, 0.0, [0, 3, 6, 7]),
    ],
)
def test_tile_starts_hand_worked(size, tile, overlap, expected):
    assert tile_starts(size, tile, overlap) == expected


def test_tile_starts_rejects_axis_shorter_than_tile():
    with pytest.raises(ValueError, match="size"):
        tile_starts(10, 16, 0.5)


def test_gaussian_importance_map_matches_formula():
    tile, sigma_scale = (5, 4, 7), 0.125
    axes = []
    for t in tile:
        d = np.arange(t) - (t - 1) / 2  # offsets from the tile centre, in voxels
        axes.append(np.exp(-(d**2) / (2 * (sigma_scale * t) ** 2)))
    expected = np.einsum("i,j,k->ijk", *axes)
    expected = np.maximum(expected, max(expected.min(), 1e-3))
    got = gaussian_importance_map(tile, sigma_scale, "cpu", torch.float64)
    assert got.shape == tile and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert got.min().item() == pytest.approx(1e-3)  # the corners are clamped


def test_gaussian_importance_map_returns_a_copy():
    first = gaussian_importance_map(TILE)
    first.zero_()
    assert gaussian_importance_map(TILE).min().item() > 0


@pytest.mark.parametrize(
    ("mode", "overlap", "batch_size"),
    list(itertools.product(["gaussian", "constant"], [0.5, 0.25], [1, 4])),
)
def test_matches_monai(mode, overlap, batch_size):
    network = _conv_network()
    torch.manual_seed(1)
    image = torch.randn(1, 2, 37, 29, 23)
    with torch.no_grad():
        got = sliding_window_inference(
            network, image, TILE, overlap=overlap, mode=mode, batch_size=batch_size
        )
        expected = monai_sliding_window_inference(
            image,
            TILE,
            batch_size,
            network,
            overlap=overlap,
            mode=mode,
            sigma_scale=0.125,
            padding_mode="constant",
            cval=0.0,
        )
    assert got.shape == (1, 3, 37, 29, 23) and got.dtype == torch.float32
    # Same tiles, weights and summation order; only float32 rounding may differ.
    assert (got - torch.as_tensor(expected)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_matches_monai_with_padding_and_batch(mode):
    # Two images, x and z shorter than the tile (padded, split as MONAI splits), odd y.
    network = _conv_network()
    torch.manual_seed(2)
    image = torch.randn(2, 2, 11, 29, 6)
    with torch.no_grad():
        got = sliding_window_inference(network, image, TILE, mode=mode, batch_size=3)
        expected = monai_sliding_window_inference(
            image, TILE, 3, network, overlap=0.5, mode=mode, padding_mode="constant", cval=0.0
        )
    assert got.shape == (2, 3, 11, 29, 6)
    assert (got - torch.as_tensor(expected)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_identity_network_gives_back_the_image(mode):
    torch.manual_seed(3)
    image = torch.randn(2, 3, 37, 29, 23)
    got = sliding_window_inference(lambda x: x, image, TILE, overlap=0.5, mode=mode, batch_size=5)
    # A weighted mean of identical values is that value, up to float32 rounding.
    assert torch.allclose(got, image, atol=1e-5, rtol=0)


def test_image_smaller_than_tile():
    torch.manual_seed(4)
    image = torch.randn(1, 1, 5, 9, 3)
    seen = []

    def network(tiles):
        seen.append(tuple(tiles.shape))
        return torch.cat([tiles, 2 * tiles], dim=1)

    got = sliding_window_inference(network, image, TILE)
    assert seen == [(1, 1, 16, 16, 16)]  # one zero-padded tile
    assert got.shape == (1, 2, 5, 9, 3)
    assert torch.allclose(got[:, :1], image, atol=1e-6)
    assert torch.allclose(got[:, 1:], 2 * image, atol=1e-6)


def test_unbatched_input_returns_unbatched_output():
    network = _conv_network(in_channels=2, out_channels=4)
    torch.manual_seed(5)
    image = torch.randn(2, 20, 17, 18)
    with torch.no_grad():
        got = sliding_window_inference(network, image, TILE)
        batched = sliding_window_inference(network, image[None], TILE)
    assert got.shape == (4, 20, 17, 18)
    assert torch.equal(got, batched[0])


def test_progress_reports_every_batch_and_ends_at_total():
    calls = []
    image = torch.zeros(2, 1, 37, 29, 23)
    sliding_window_inference(
        lambda x: x, image, TILE, overlap=0.5, batch_size=5, progress=lambda *a: calls.append(a)
    )
    # Hand count: x starts [0, 8, 16, 21], y [0, 8, 13], z [0, 7] -> 24 tiles per image.
    assert calls == [
        (5, 48),
        (10, 48),
        (15, 48),
        (20, 48),
        (25, 48),
        (30, 48),
        (35, 48),
        (40, 48),
        (45, 48),
        (48, 48),
    ]


def test_gradients_flow_when_the_caller_enables_them():
    network = _conv_network()
    image = torch.randn(1, 2, 20, 18, 17)
    sliding_window_inference(network, image, TILE).sum().backward()
    assert network.weight.grad is not None and network.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tile_size": (16, 16)}, "tile_size"),
        ({"tile_size": (16, 0, 16)}, "tile_size"),
        ({"tile_size": (16, 8.5, 16)}, "tile_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"mode": "linear"}, "mode"),
        ({"batch_size": 0}, "batch_size"),
        ({"sigma_scale": 0.0}, "sigma_scale"),
    ],
)
def test_argument_validation(kwargs, name):
    arguments = {"tile_size": TILE, **kwargs}
    with pytest.raises(ValueError, match=name):
        sliding_window_inference(lambda x: x, torch.zeros(1, 1, 8, 8, 8), **arguments)


def test_rejects_bad_image_and_network_shapes():
    with pytest.raises(ValueError, match="image"):
        sliding_window_inference(lambda x: x, torch.zeros(8, 8, 8), TILE)
    with pytest.raises(ValueError, match="network"):
        sliding_window_inference(lambda x: x[:, :, :8], torch.zeros(1, 1, 20, 20, 20), TILE)
