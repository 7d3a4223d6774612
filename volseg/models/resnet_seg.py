"""3D ResNet-50 encoder with a transposed-convolution decoder: the "3D ResNet segmentation"
network of the 5-class, 2-channel volumetric pipeline."""

from __future__ import annotations

import torch
from torch import nn

from volseg.models.blocks import (
    DeepSupervisionHeads,
    check_deep_supervision,
    check_network_args,
    make_act,
    make_norm,
)
from volseg.models.resnet_encoder import ResNetEncoder3d, check_input

RESNET_SEG_DEPTHS = (50, 101)


class ResNetSeg(nn.Module):
    """Encoder-decoder without skip connections: a 3D ResNet-50 (He et al. 2016, Table 1;
    bottleneck blocks [3, 4, 6, 3], expansion 4) and a stack of transposed convolutions.

    Encoder (:class:`~volseg.models.resnet_encoder.ResNetEncoder3d`): a ``stem_kernel``-cubed
    conv-norm-act, stride 2, from ``in_channels`` to ``features`` channels, *no* max pool (the
    write-up's stem is the strided conv alone), then four bottleneck stages of widths
    ``features * [1, 2, 4, 8]`` whose outputs are 4x that (256 .. 2048 for ``features=64``),
    the last three halving the size. The deepest feature is at 1/16 of the input size, which
    is :attr:`divisor`.

    Decoder: four blocks of 2x2x2 transposed conv with stride 2, norm and activation (plus
    Dropout3d if ``dropout``), narrowing ``32f -> 8f -> 4f -> 2f -> f`` for ``f = features``
    (2048 -> 512 -> 256 -> 128 -> 64), back to the input size; a final 1x1x1 conv gives
    ``out_channels`` logits (no softmax).

    Parameter count, ``in_channels=2, out_channels=5, features=64``, instance or batch norm:
    55,944,133 (encoder 46,177,024, the same as MONAI's 3D ``resnet50`` body with option-B
    shortcuts; decoder 9,766,784; head 325). The write-up claims "~26 million", which is the size of
    a *2D* ResNet-50 (25.6 M with its 1000-class classifier, 23.5 M without). In 3D the 3x3 kernels
    of the 16 middle convolutions become 3x3x3, so their weights go from 11.3 M to 34.0 M, and the
    7x7 stem becomes 7x7x7; that alone makes the encoder 46.2 M. The decoder adds 9.8 M, 8.4 M of it
    in the first 2048 -> 512 up-convolution. The write-up gives no kernel sizes; where it is silent
    we follow He et al. (7x7x7 stem, 3x3x3 inner convs).

    Deep supervision (default off, not in the write-up) follows nnU-Net (Isensee et al. 2021;
    see ``blocks.DeepSupervisionHeads``), though without skips there is no U: with
    ``deep_supervision=True`` a 1x1x1 head reads each decoder block's output below full
    resolution (1/8, 1/4, 1/2), and in training mode the network returns 4 logit maps, full
    resolution first, each half the size of the one before (for
    ``volseg.losses.DeepSupervisionLoss``); in eval mode it returns the one full-resolution
    tensor, identical to the output without deep supervision for the same weights. The heads
    add ``c * out_channels + out_channels`` parameters per block of width ``c``:
    5 * (128 + 256 + 512) + 3 * 5 = 4,495 for the configuration counted above.

    Args:
        in_channels: image channels (2 in the write-up).
        out_channels: number of classes (5 in the write-up).
        depth: ResNet depth, 50 (the write-up) or 101.
        features: stem and first-stage width (64 in ResNet).
        norm: "batch", "instance", "group" or "none" (see ``blocks.make_norm``).
        act: "relu", "leaky_relu", "prelu", "gelu" or "none" (see ``blocks.make_act``).
        dropout: Dropout3d probability after each decoder block, in [0, 1).
        stem_kernel: odd cubic kernel edge of the stem conv (7 in ResNet), voxels.
        deep_supervision: in training mode, return the list of per-block logits described
            above.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 50,
        features: int = 64,
        norm: str = "instance",
        act: str = "relu",
        dropout: float = 0.0,
        stem_kernel: int = 7,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(in_channels, out_channels, features, norm, act, dropout)
        if depth not in RESNET_SEG_DEPTHS:
            raise ValueError(f"depth must be one of {RESNET_SEG_DEPTHS}, got {depth!r}")
        check_deep_supervision(deep_supervision)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.encoder = ResNetEncoder3d(
            in_channels, depth, features, norm, act, stem_kernel, stem_stride=2, stem_pool=False
        )
        blocks: list[nn.Module] = []
        cin = self.encoder.channels[-1]
        widths = (8 * features, 4 * features, 2 * features, features)
        for cout in widths:
            blocks += [
                # A norm's mean subtraction would cancel a bias, so there is one only without.
                nn.ConvTranspose3d(cin, cout, 2, stride=2, bias=norm == "none"),
                make_norm(norm, cout),
                make_act(act),
            ]
            if dropout > 0:
                blocks.append(nn.Dropout3d(dropout))
            cin = cout
        # One flat Sequential (its parameter names predate deep supervision); a block is
        # this many consecutive layers.
        self.decoder = nn.Sequential(*blocks)
        self._block_layers = len(blocks) // len(widths)
        self.head = nn.Conv3d(features, out_channels, kernel_size=1)
        # Built only when used, so deep_supervision=False keeps the parameters as they were.
        self.aux_heads = (
            DeepSupervisionHeads(widths[::-1], out_channels) if deep_supervision else None
        )

    @property
    def divisor(self) -> int:
        """Spatial sizes (voxels) must be multiples of this (16: stem and three stages)."""
        return self.encoder.divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (N, out_channels, X, Y, Z) for images (N, in_channels, X, Y, Z); a list,
        highest resolution first, only when ``deep_supervision`` is on and the module is
        training (see the class docstring)."""
        check_input(x, self.in_channels, self.divisor, self.encoder.norm)
        x = self.encoder(x)[-1]
        if self.aux_heads is None or not self.training:
            return self.head(self.decoder(x))
        decoded = []  # every decoder block's output, coarsest first
        for i, layer in enumerate(self.decoder, start=1):
            x = layer(x)
            if i % self._block_layers == 0:
                decoded.append(x)
        return self.aux_heads(self.head(x), decoded[::-1])
