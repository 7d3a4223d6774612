"""A U-Net whose depth, per-axis strides and kernel sizes come from a plan: the topology nnU-Net
configures per dataset (Isensee et al. 2021, Nature Methods 18:203, Fig. 2 and Methods,
"Network topology"; nnU-Net v2's ``PlainConvUNet``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from volseg.models.blocks import (
    ConvNormAct,
    DeepSupervisionHeads,
    check_deep_supervision,
    check_network_args,
    per_axis,
    supervised_logits,
)


class DynamicUNet(nn.Module):
    """A plain-convolution U-Net with one entry per resolution level in each topology list.

    Encoder level ``i``: ``convs_per_stage`` conv-norm-act layers of ``kernel_sizes[i]`` and
    ``features[i]`` channels, the first with stride ``strides[i]`` (downsampling by strided
    convolution, as nnU-Net does; level 0 has stride 1). Anisotropic data gets strides such as
    ``[2, 2, 1]`` and kernels such as ``[3, 3, 1]`` on its first levels, which pool in-plane
    first. Decoder level ``i``: a transposed convolution with kernel and stride ``strides[i+1]``
    back to level ``i``'s grid and ``features[i]`` channels, the encoder's skip features
    concatenated, then ``convs_per_stage`` conv-norm-act layers of ``kernel_sizes[i]``. A 1x1x1
    convolution gives ``out_channels`` logits. With ``deep_supervision`` the network also
    returns a 1x1x1 head's logits on every coarser decoder level in training
    (`DeepSupervisionHeads`), full resolution first.

    Args:
        in_channels: input channels (modalities).
        out_channels: classes.
        features: channels per level, full resolution first (nnU-Net: 32, doubling, capped
            at 320).
        strides: per level, the stride of its first convolution along x, y, z (an integer
            means all three); the first level's must be 1.
        kernel_sizes: per level, the odd kernel edge along x, y, z (or one integer).
        convs_per_stage: conv-norm-act layers per encoder and decoder level (nnU-Net: 2).
        norm: ``instance`` (nnU-Net's), ``batch``, ``group`` or ``none``.
        act: ``leaky_relu`` (nnU-Net's, slope 0.01) or another of `volseg.models.blocks.ACTS`.
        dropout: Dropout3d probability after each activation (0: none).
        deep_supervision: return the coarser decoder levels' logits too, in training.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (4, 8, 16),
        strides: Sequence[int | Sequence[int]] = (1, 2, 2),
        kernel_sizes: Sequence[int | Sequence[int]] = (3, 3, 3),
        convs_per_stage: int = 2,
        norm: str = "instance",
        act: str = "leaky_relu",
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        features = [int(f) for f in features]
        check_network_args(in_channels, out_channels, min(features, default=0), norm, act,
                           dropout)
        check_deep_supervision(deep_supervision)
        if not len(features) == len(strides) == len(kernel_sizes) or len(features) < 2:
            raise ValueError(
                "features, strides and kernel_sizes need one entry per level, at least 2 levels; "
                f"got {len(features)}, {len(strides)} and {len(kernel_sizes)}")
        self.strides = [per_axis(f"strides[{i}]", s) for i, s in enumerate(strides)]
        self.kernel_sizes = [per_axis(f"kernel_sizes[{i}]", k)
                             for i, k in enumerate(kernel_sizes)]
        if self.strides[0] != (1, 1, 1):
            raise ValueError(f"strides[0] must be 1 (the input level), got {strides[0]!r}")
        if any(k % 2 == 0 for kernel in self.kernel_sizes for k in kernel):
            raise ValueError(
                f"kernel_sizes must be odd, got {[list(k) for k in self.kernel_sizes]}")
        if convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be >= 1, got {convs_per_stage}")

        def stage(channels_in: int, channels: int, level: int, stride: Sequence[int]) -> nn.Module:
            layers = [ConvNormAct(channels_in if i == 0 else channels, channels,
                                  self.kernel_sizes[level], stride if i == 0 else 1,
                                  norm=norm, act=act, dropout=dropout)
                      for i in range(convs_per_stage)]
            return nn.Sequential(*layers)

        self.encoder = nn.ModuleList(
            stage(in_channels if i == 0 else features[i - 1], features[i], i, self.strides[i])
            for i in range(len(features)))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(features[i + 1], features[i], self.strides[i + 1],
                               stride=self.strides[i + 1], bias=False)
            for i in range(len(features) - 1))
        self.decoder = nn.ModuleList(stage(2 * features[i], features[i], i, (1, 1, 1))
                                     for i in range(len(features) - 1))
        self.head = nn.Conv3d(features[0], out_channels, kernel_size=1)
        self.aux_heads = (DeepSupervisionHeads(features[:-1], out_channels)
                          if deep_supervision else None)
        self.in_channels = in_channels

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the size every input must be a multiple of: the product of the strides."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(3))

    @property
    def divisor(self) -> int:
        """The least size that is a multiple of every axis's divisor (a cube that fits)."""
        return math.lcm(*self.divisors)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, x, y, z), got {tuple(x.shape)}")
        bad = [f"{axis} {size} (a multiple of {d})" for axis, size, d in
               zip("xyz", x.shape[2:], self.divisors, strict=True) if size % d]
        if bad:
            raise ValueError(f"every spatial size must be a multiple of the product of its "
                             f"strides: {', '.join(bad)}")
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        decoded = []
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([self.upsample[i](x), skips[i]], dim=1))
            decoded.append(x)
        heads = self.aux_heads if self.training else None
        return supervised_logits(self.head, heads, x, decoded)
