"""A trained network as inference needs it: the network, its preprocessing and its settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from volseg.data.preprocess import Preprocessor
from volseg.inference.inferer import SlidingWindowInferer


@dataclass
class TrainedNetwork:
    """Everything a checkpoint tells inference, with nothing of training attached.

    The engine builds these (`volseg.engine.checkpoint_loading`); `Predictor` runs them.

    Attributes:
        network: the network; its weights in ``memory_format``.
        preprocessor: what turns a raw volume into the network's input, and back.
        inferer: the sliding-window settings it was validated with.
        class_names: one per output channel, background first.
        in_channels: input channels the network expects (``None``: not recorded).
        regions: extra scored regions, name -> labels.
        postprocessing: the largest-component cleaning chosen on the validation cases.
        memory_format: the layout inputs are given in (channels-last 3D or contiguous).
    """

    network: nn.Module
    preprocessor: Preprocessor
    inferer: SlidingWindowInferer
    class_names: list[str]
    in_channels: int | None = None
    regions: dict[str, list[int]] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    def __call__(self, tiles: Tensor) -> Tensor | list[Tensor]:
        return self.network(tiles.contiguous(memory_format=self.memory_format))

    def output_shape(self, tile_size: Sequence[int]) -> list[int]:
        """What the network makes of a tile: smaller for valid (unpadded) convolutions."""
        shape = getattr(self.network, "output_shape", None)
        return list(shape(tile_size)) if shape is not None else list(tile_size)

    def logits(self, image: Tensor, progress: Callable[[int, int], None] | None = None) -> Tensor:
        """Whole-volume logits ``(N, K, x, y, z)`` by the network's sliding window."""
        return self.inferer(self, image, progress)
