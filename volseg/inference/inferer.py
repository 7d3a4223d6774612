"""A network's sliding-window settings, and the call that runs a network with them.

MONAI splits inference the same way (``SlidingWindowInferer(roi_size, ...)(inputs, network)``):
the settings are an object of their own, the network is any callable, so training
(`SegmentationModule`) and prediction (`Predictor`) run a network through one code path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from volseg.inference.sliding_window import (
    check_batch_size,
    check_mode,
    check_overlap,
    check_tile_size,
    sliding_window_inference,
)


@dataclass(frozen=True)
class SlidingWindowInferer:
    """Where a network's tiles go, and how their outputs are blended.

    Attributes:
        tile_size: tile (x, y, z) in voxels: the training patch, for networks with instance
            or group norm (`volseg.inference.norm_checks`).
        overlap: fraction of a tile shared with its neighbour along each axis, in [0, 1).
        mode: ``"gaussian"`` (nnU-Net's weighting) or ``"constant"``.
        batch_size: tiles per network call.
        key: the config key the settings came from, named by errors.
    """

    tile_size: tuple[int, int, int]
    overlap: float = 0.5
    mode: str = "gaussian"
    batch_size: int = 1
    key: str = "module.inference"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any],
                      key: str = "module.inference") -> SlidingWindowInferer:
        """From a ``module.inference`` mapping (``tile_size`` required, the rest optional)."""
        if "tile_size" not in settings:
            raise ValueError(f"{key}.tile_size is missing")
        unknown = set(settings) - {"tile_size", "overlap", "mode", "batch_size"}
        if unknown:
            raise ValueError(f"{key}: unknown setting(s) {sorted(unknown)}")
        return cls(**settings, key=key)

    def __post_init__(self) -> None:
        # Checked where the settings are made, so a bad one is refused before any volume.
        object.__setattr__(self, "tile_size", check_tile_size(self.tile_size))
        check_overlap(self.overlap)
        check_mode(self.mode)
        check_batch_size(self.batch_size)

    def with_overrides(self, **overrides: Any) -> SlidingWindowInferer:
        """A copy with the given settings replaced; ``None`` keeps the current value."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def __call__(self, network: Callable[[Tensor], Any], image: Tensor,
                 progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Whole-volume logits ``(N, K, x, y, z)`` of ``image`` ``(N, C, x, y, z)``.

        ``network`` may return a list of scales (deep supervision: the first is full
        resolution), and may trim a margin off each tile (valid convolutions), which it then
        reports through an ``output_shape(tile_size)`` method: tiles get that context padded on.
        """
        tile_size = list(self.tile_size)
        output_shape = getattr(network, "output_shape", None)
        margin = ([t - o for t, o in zip(tile_size, output_shape(tile_size))]
                  if output_shape is not None else [0, 0, 0])

        def full_resolution(tiles: Tensor) -> Tensor:
            if any(margin):  # unpadded convolutions: feed the context they consume
                pad = [p for m in reversed(margin) for p in (m // 2, m - m // 2)]
                tiles = F.pad(tiles, pad, mode="replicate")
            output = network(tiles)
            output = output[0] if isinstance(output, (list, tuple)) else output
            if tuple(output.shape[-3:]) != tuple(tile_size):
                raise ValueError(
                    f"{self.key}.tile_size={tile_size} gives a {tuple(output.shape[-3:])} "
                    "network output; choose a tile the network maps onto itself"
                )
            return output

        return sliding_window_inference(full_resolution, image, tile_size=tile_size,
                                        overlap=self.overlap, mode=self.mode,
                                        batch_size=self.batch_size, progress=progress)

