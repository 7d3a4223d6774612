"""Sliding-window inference: run a patch-trained network over a whole volume.

The tile placement and the Gaussian importance weighting follow nnU-Net (Isensee et al., 2021,
Nat. Methods, "sliding window inference" in the online methods) in the form MONAI's
``sliding_window_inference`` implements it, so for the same arguments the two agree to float
rounding; the tests check that. This is our own implementation: it computes the weight
normaliser once per volume (not per image and channel), caches the importance map, and fuses
weighting and accumulation into one in-place operation per tile.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("gaussian", "constant")

# Smallest weight any voxel of a tile gets. Without a floor the corners of a Gaussian map are
# ~1e-10, and a voxel covered only by tile corners would be divided by almost nothing.
_MIN_WEIGHT = 1e-3


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start indices (voxels) of the tiles that cover one axis of ``size`` voxels.

    The step is ``max(1, int(tile * (1 - overlap)))``; tiles start at 0, step, 2 * step, ...
    while they end inside the axis, and one last tile is aligned to the end
    (``size - tile``), so every voxel is covered and no tile leaves the volume.
    Example: ``tile_starts(37, 16, 0.5) == [0, 8, 16, 21]``.

    Args:
        size: length of the axis in voxels; at least ``tile`` (pad smaller axes first).
        tile: tile length in voxels, >= 1.
        overlap: fraction of the tile shared by neighbouring tiles, in [0, 1).
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if size < tile:
        raise ValueError(f"size must be >= tile ({tile}); pad the axis first, got {size}")
    check_overlap(overlap)
    step = max(1, int(tile * (1 - overlap)))
    last = size - tile
    return [*range(0, last, step), last]


def gaussian_importance_map(
    tile_size: Sequence[int],
    sigma_scale: float = 0.125,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-voxel weight of a tile's prediction: a separable Gaussian centred on the tile.

    Along each axis of length ``t`` the weight is ``exp(-d**2 / (2 * sigma**2))`` with
    ``sigma = sigma_scale * t`` voxels and ``d`` the offset from the tile centre,
    ``-(t - 1) / 2 ... (t - 1) / 2``; the 3D map is the product of the three, not
    normalised (the peak is 1 for odd tiles, slightly below for even ones), and clamped below
    at ``max(min, 1e-3)`` so that tile corners still count. nnU-Net uses ``sigma_scale = 1/8``.

    Args:
        tile_size: tile shape in voxels, (x, y, z).
        sigma_scale: Gaussian sigma as a fraction of the tile length, > 0.
        device: device of the returned map.
        dtype: dtype of the returned map.

    Returns:
        Tensor of shape ``tile_size``. A fresh copy: the caller may modify it.
    """
    tile = check_tile_size(tile_size)
    _check_sigma_scale(sigma_scale)
    return _importance_map(
        tile, "gaussian", float(sigma_scale), torch.device(device or "cpu"), dtype
    ).clone()


@functools.lru_cache(maxsize=16)
def _importance_map(
    tile: tuple[int, ...], mode: str, sigma_scale: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Cached importance map; shared between calls, so it must never be modified in place."""
    if mode == "constant":
        return torch.ones(tile, device=device, dtype=dtype)
    weight = torch.ones((), dtype=torch.float64)
    for t in tile:
        # Float64 for the exponentials, then one cast: the map is small and computed once.
        offset = torch.arange(t, dtype=torch.float64) - (t - 1) / 2
        axis = torch.exp(-(offset**2) / (2 * (sigma_scale * t) ** 2))
        weight = weight[..., None] * axis
    weight = weight.clamp(min=max(weight.min().item(), _MIN_WEIGHT))
    return weight.to(device=device, dtype=dtype)


def sliding_window_inference(
    network: Callable[[Tensor], Tensor],
    image: Tensor,
    tile_size: Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    batch_size: int = 1,
    sigma_scale: float = 0.125,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Predict a whole volume tile by tile and blend the tiles with importance weights.

    Each voxel's output is the weighted mean of the network outputs of all tiles covering it,
    with weights from :func:`gaussian_importance_map` (``mode="gaussian"``, nnU-Net's choice:
    tile borders, which saw the least context, count least) or all ones (``"constant"``).
    Tiles are placed per axis by :func:`tile_starts`, as in MONAI's
    ``sliding_window_inference``. An axis shorter than the tile is zero-padded up to the tile,
    ``(tile - size) // 2`` voxels before and the rest after (MONAI's split), and the output is
    cropped back.

    Gradient tracking is left to the caller: wrap the call in ``torch.no_grad()`` or
    ``torch.inference_mode()`` for inference (otherwise every tile's graph is kept); with
    gradients enabled the result is differentiable.

    Args:
        network: maps a batch of tiles ``(B, C, *tile_size)`` to ``(B, K, *tile_size)``.
            It receives tiles on the image's device and dtype.
        image: ``(N, C, X, Y, Z)``, or ``(C, X, Y, Z)`` for a single image.
        tile_size: tile shape in voxels, three integers >= 1.
        overlap: fraction of a tile shared with its neighbour along each axis, in [0, 1).
        mode: ``"gaussian"`` or ``"constant"`` weighting.
        batch_size: tiles per network call, >= 1 (tiles of different images may share a batch).
        sigma_scale: Gaussian sigma as a fraction of the tile length (gaussian mode only).
        progress: called as ``progress(done_tiles, total_tiles)`` after each network call.

    Returns:
        float32 tensor ``(N, K, X, Y, Z)`` on the image's device (``(K, X, Y, Z)`` for a 4D
        input).
    """
    tile = check_tile_size(tile_size)
    check_overlap(overlap)
    check_mode(mode)
    check_batch_size(batch_size)
    if mode == "gaussian":
        _check_sigma_scale(sigma_scale)
    unbatched = image.ndim == 4
    if unbatched:
        image = image[None]
    if image.ndim != 5 or image.shape[0] == 0 or min(image.shape[2:]) < 1:
        raise ValueError(
            f"image must be (N, C, X, Y, Z) or (C, X, Y, Z) with N and X, Y, Z >= 1, "
            f"got shape {tuple(image.shape)}"
        )

    size = image.shape[2:]
    pad_before = [max(t - s, 0) // 2 for s, t in zip(size, tile, strict=True)]
    pad_after = [max(t - s, 0) - b for s, t, b in zip(size, tile, pad_before, strict=True)]
    if any(pad_before) or any(pad_after):
        # F.pad lists (before, after) pairs from the last axis to the first.
        pads = [p for axis in (2, 1, 0) for p in (pad_before[axis], pad_after[axis])]
        image = F.pad(image, pads, mode="constant", value=0.0)
    padded = image.shape[2:]

    # itertools.product walks the last axis fastest, as MONAI does, so sums add up in its order.
    starts = [tile_starts(s, t, overlap) for s, t in zip(padded, tile, strict=True)]
    windows = [
        tuple(slice(c, c + t) for c, t in zip(corner, tile, strict=True))
        for corner in itertools.product(*starts)
    ]
    device = image.device
    weight = _importance_map(tile, mode, float(sigma_scale), device, torch.float32)
    # The normaliser depends only on the tile layout, so it is summed once per volume and
    # shared by every image and channel, instead of once per image as each tile is added.
    weight_sum = torch.zeros(padded, dtype=torch.float32, device=device)
    for window in windows:
        weight_sum[window] += weight

    jobs = [(n, window) for n in range(image.shape[0]) for window in windows]
    total = len(jobs)
    output: Tensor | None = None
    for first in range(0, total, batch_size):
        chunk = jobs[first : first + batch_size]
        tiles = torch.stack([image[(n, slice(None), *window)] for n, window in chunk])
        pred = network(tiles)
        if pred.ndim != 5 or pred.shape[0] != len(chunk) or tuple(pred.shape[2:]) != tile:
            raise ValueError(
                f"network must map tiles {tuple(tiles.shape)} to (B, K, *tile_size), "
                f"got {tuple(pred.shape)}"
            )
        pred = pred.to(device)
        if output is None:
            # Allocated on the first call, since only the network knows K.
            output = torch.zeros(
                (image.shape[0], pred.shape[1], *padded), dtype=torch.float32, device=device
            )
        for i, (n, window) in enumerate(chunk):
            # Weighting and accumulation in one kernel, without a weighted copy of the batch.
            output[(n, slice(None), *window)].addcmul_(pred[i], weight)
        if progress is not None:
            progress(first + len(chunk), total)

    assert output is not None  # total >= 1: the image has at least one tile
    output /= weight_sum
    if any(pad_before) or any(pad_after):
        crop = tuple(slice(b, b + s) for b, s in zip(pad_before, size, strict=True))
        output = output[(slice(None), slice(None), *crop)].contiguous()
    return output[0] if unbatched else output


def check_tile_size(tile_size: Sequence[int]) -> tuple[int, int, int]:
    """Return ``tile_size`` as a tuple of three ints, or raise ValueError naming it."""
    try:
        tile = tuple(int(t) for t in tile_size)
        valid = len(tile) == 3 and all(
            t >= 1 and t == s for t, s in zip(tile, tile_size, strict=True)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"tile_size must be three integers >= 1, got {tile_size!r}")
    return tile  # type: ignore[return-value]


def check_overlap(overlap: float) -> None:
    """ValueError naming ``overlap`` unless it is in [0, 1)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")


def check_mode(mode: str) -> None:
    """ValueError naming ``mode`` unless it is one of `MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def check_batch_size(batch_size: int) -> None:
    """ValueError naming ``batch_size`` unless it is an integer >= 1."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")


def _check_sigma_scale(sigma_scale: float) -> None:
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
