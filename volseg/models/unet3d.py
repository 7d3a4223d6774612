"""3D U-Net of Çiçek et al. 2016 (MICCAI), "3D U-Net: Learning Dense Volumetric Segmentation
from Sparse Annotation", Fig. 1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from volseg.models.blocks import (
    PADDINGS,
    ConvNormAct,
    DeepSupervisionHeads,
    check_deep_supervision,
    check_network_args,
    supervised_logits,
)


class UNet3D(nn.Module):
    """3D U-Net following Çiçek et al. 2016, Fig. 1 and Sec. 2.

    Analysis path: at every level two 3x3x3 conv-norm-act layers, the first giving ``c``
    channels and the second ``2c`` (the paper doubles the channels *before* each max pooling to
    avoid bottlenecks), with ``c = features * 2**level``; then 2x2x2 max pooling, stride 2.
    ``num_levels`` counts every resolution, the bottom one included: the paper's network is
    ``features=32, num_levels=4`` (32-64, 64-128, 128-256 and the bottom 256-512).
    Synthesis path: a 2x2x2 up-convolution with stride 2 that keeps the channel count, the skip
    features of the same level concatenated, then two 3x3x3 conv-norm-act layers with the width
    of that level's second analysis conv (256, 256 / 128, 128 / 64, 64 in Fig. 1). A final
    1x1x1 convolution gives ``out_channels`` logits (no softmax).

    Parameter count, ``in_channels=3, out_channels=3, features=32, num_levels=4``: the paper states
    19,069,955. Ours is 19,069,955 with ``norm="none"`` (identical) and 19,072,291 with
    ``norm="batch"`` or the default ``norm="instance"``. The paper's figure is exactly the weights
    (19,067,616) plus one bias per 3x3x3 and 1x1x1 convolution output channel (2,336 + 3) and *no*
    up-convolution bias (adding those would give 896 more), so our up-convolutions have no bias.
    With batch norm the 3x3x3 convolutions drop their bias (the norm's mean subtraction would cancel
    it) and each of their 2,336 output channels gains a norm scale and shift: 19,069,955 - 2,336 +
    4,672 = 19,072,291. The BN running statistics are buffers, not parameters. The paper puts BN
    before each ReLU, as ``norm="batch"`` does.

    Deliberate differences from the paper:

    * ``norm="instance"`` is the default: BatchNorm's running statistics, estimated from 2-4
      heterogeneous patches per step, made validation Dice swing from epoch to epoch
      (docs/benchmarks.md, "Training recipes"). ``experiment=unet3d_sparse`` keeps the paper's BN.

    * ``padding="same"`` is the default; the paper used unpadded ("valid") convolutions. With
      same padding the output aligns voxel for voxel with the input tile, so sliding-window
      inference stitches tiles exactly, and no context margin has to be bookkept. Spatial sizes
      must then be divisible by :attr:`divisor`. ``padding="valid"`` reproduces the paper:
      132x132x116 in, 44x44x28 out, with the skip features centre-cropped to the up-sampled
      size before concatenation (see :meth:`output_shape`).
    * ``dropout`` (absent from the paper, default 0) adds Dropout3d after every conv-norm-act,
      e.g. for Monte-Carlo dropout uncertainty.
    * ``deep_supervision`` (absent from the paper, default off) follows nnU-Net (Isensee et al.
      2021; see ``blocks.DeepSupervisionHeads``): a 1x1x1 head on each synthesis level below
      full resolution. In training mode the network then returns ``num_levels - 1`` logit
      maps, highest resolution first, each half the size of the one before (for
      ``volseg.losses.DeepSupervisionLoss``); in eval mode the one full-resolution tensor,
      identical to the output without deep supervision for the same weights. The heads add
      ``2c * out_channels + out_channels`` parameters per level (``c`` that level's first
      width): 387 + 771 = 1,158 for the paper's network with 3 labels. It needs
      ``padding="same"``: with valid convolutions the coarse maps cover more than the cropped
      full-resolution output, so a target resized to their size would not line up.

    Args:
        in_channels: image channels (modalities).
        out_channels: number of classes (logit channels).
        features: channels of the first convolution, ``c`` at level 1 (32 in the paper).
        num_levels: resolution levels including the bottom one (4 in the paper).
        norm: "batch", "instance", "group" or "none" (see ``blocks.make_norm``).
        act: "relu", "leaky_relu", "prelu", "gelu" or "none" (see ``blocks.make_act``).
        dropout: Dropout3d probability after each conv-norm-act, in [0, 1).
        padding: "same" (output size == input size) or "valid" (the paper's unpadded convs).
        deep_supervision: in training mode, return the list of per-level logits described
            above.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 32,
        num_levels: int = 4,
        norm: str = "instance",
        act: str = "relu",
        dropout: float = 0.0,
        padding: str = "same",
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(in_channels, out_channels, features, norm, act, dropout)
        if num_levels < 2:
            raise ValueError(f"num_levels must be >= 2 (one pooling at least), got {num_levels}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        check_deep_supervision(deep_supervision)
        if deep_supervision and padding != "same":
            raise ValueError(
                "deep_supervision=True needs padding='same' (valid convolutions leave the "
                f"coarse outputs misaligned with the cropped target), got padding={padding!r}"
            )

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_levels = num_levels
        self.padding = padding
        self.deep_supervision = deep_supervision

        def double_conv(cin: int, cmid: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                ConvNormAct(cin, cmid, 3, padding=padding, norm=norm, act=act, dropout=dropout),
                ConvNormAct(cmid, cout, 3, padding=padding, norm=norm, act=act, dropout=dropout),
            )

        # widths[level] = c, the first conv's width; the level's output is 2c.
        widths = [features * 2**level for level in range(num_levels)]

        # encoders[-1] is the bottom level (no pooling after it).
        self.encoders = nn.ModuleList()
        cin = in_channels
        for c in widths:
            self.encoders.append(double_conv(cin, c, 2 * c))
            cin = 2 * c
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)

        # ups[i] / decoders[i] serve level i (0 = full resolution), from the level below it.
        # The up-convolution has no bias: this is what makes the paper's 19,069,955 add up.
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(num_levels - 1):
            below = 2 * widths[level + 1]
            skip = 2 * widths[level]
            self.ups.append(nn.ConvTranspose3d(below, below, 2, stride=2, bias=False))
            self.decoders.append(double_conv(below + skip, skip, skip))

        self.head = nn.Conv3d(2 * widths[0], out_channels, kernel_size=1)
        # Built only when used, so deep_supervision=False keeps the parameters as they were.
        self.aux_heads = (
            DeepSupervisionHeads([2 * c for c in widths[:-1]], out_channels)
            if deep_supervision
            else None
        )

    @property
    def divisor(self) -> int:
        """Spatial sizes (voxels) must be multiples of this for ``padding="same"``."""
        return 2 ** (self.num_levels - 1)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size (voxels) for a spatial input size, e.g. (132, 132, 116).

        With ``padding="same"`` this is the input size. With ``padding="valid"`` every 3x3x3
        conv trims 1 voxel per side, pooling halves and up-convolution doubles the size.

        Raises:
            ValueError: same padding and a size not divisible by :attr:`divisor`; valid padding
                and a size that reaches zero or is odd before a pooling.
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must have 3 spatial sizes, got {tuple(input_shape)}")
        if self.padding == "same":
            if any(s % self.divisor for s in shape) or min(shape) < 1:
                raise ValueError(
                    f"with padding='same' every spatial size must be a positive multiple of "
                    f"divisor={self.divisor} (2**(num_levels-1)), got {shape}"
                )
            return shape
        return tuple(self._valid_output_size(s, shape) for s in shape)

    def _valid_output_size(self, size: int, shape: tuple[int, ...]) -> int:
        def too_small(where: str) -> ValueError:
            return ValueError(f"input shape {shape} is too small for padding='valid': {where}")

        for level in range(self.num_levels - 1):
            size -= 4  # two unpadded 3x3x3 convs
            if size < 2:
                raise too_small(f"size {size} before pooling at level {level + 1}")
            if size % 2:
                raise ValueError(
                    f"input shape {shape} gives odd size {size} before pooling at level "
                    f"{level + 1}; padding='valid' needs even sizes there"
                )
            size //= 2
        size -= 4  # bottom level
        if size < 1:
            raise too_small(f"size {size} at the bottom level")
        for level in reversed(range(self.num_levels - 1)):
            size = 2 * size - 4  # up-convolution, then two unpadded convs
            if size < 1:
                raise too_small(f"size {size} in the synthesis path at level {level + 1}")
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (N, out_channels, *output_shape(x.shape[2:])) for images (N, C, X, Y, Z); a
        list, highest resolution first, only when ``deep_supervision`` is on and the module is
        training (see the class docstring)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        self.output_shape(x.shape[2:])  # raises with a clear message on a bad size

        skips = []
        for encoder in self.encoders[:-1]:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.encoders[-1](x)
        supervise = self.aux_heads is not None and self.training
        decoded = []  # every synthesis level's output, coarsest first, for deep supervision
        for level in reversed(range(self.num_levels - 1)):
            x = self.ups[level](x)
            x = torch.cat([_center_crop(skips[level], x.shape[2:]), x], dim=1)
            x = self.decoders[level](x)
            if supervise:
                decoded.append(x)
        return supervised_logits(self.head, self.aux_heads if supervise else None, x, decoded)


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of (N, C, *spatial) ``x`` to ``size`` around the centre."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]
