"""U-Net with a 3D ResNet-18/34 encoder: the "3D U-Net with a ResNet-18 backbone" used for
kidney and tumour segmentation on KiTS23."""

from __future__ import annotations

import torch
from torch import nn

from volseg.models.blocks import (
    ConvNormAct,
    DeepSupervisionHeads,
    check_deep_supervision,
    check_network_args,
    supervised_logits,
)
from volseg.models.resnet_encoder import ResNetEncoder3d, check_input

RESUNET_DEPTHS = (18, 34)


class ResUNet(nn.Module):
    """U-Net (Ronneberger et al. 2015; Çiçek et al. 2016) whose encoder is a 3D ResNet
    (He et al. 2016, Table 1; 3D as in Hara et al. 2018 / MedicalNet), see
    :class:`~volseg.models.resnet_encoder.ResNetEncoder3d`.

    Encoder: ResNet-18 (basic blocks [2, 2, 2, 2]) or ResNet-34 ([3, 4, 6, 3]) with the
    paper's stem by default: 7x7x7 conv stride 2, 3x3x3 max pool stride 2, then four stages
    at 1/4, 1/8, 1/16 and 1/32 of the input size (``features * [1, 2, 4, 8]`` channels).

    Decoder, from the deepest stage up, one step per halving: a 2x2x2 transposed conv with
    stride 2 that keeps the channel count (no bias, as in :class:`~volseg.models.UNet3D`),
    the encoder feature at that resolution concatenated, then two 3x3x3 conv-norm-act whose
    width is that skip's channel count. Skips come from every stage and from the stem (at 1/2).
    The stride-2 stem leaves no encoder feature at full resolution, so the last step
    up-samples to the input size without a skip and narrows to ``features // 2`` channels
    (as segmentation_models_pytorch's ResNet U-Net does); a final 1x1x1 conv gives
    ``out_channels`` logits (no softmax). The output is therefore at full input resolution.
    ``stem_stride=1`` instead keeps the stem at full resolution (and gives a full-resolution
    skip) at 8x the stem's compute; ``stem_pool=False`` drops the max pool. The encoder's
    total downsampling, :attr:`divisor` (32 by default), must divide every input size.

    Parameter count, ``in_channels=1, out_channels=3`` (KiTS23 without cysts: background,
    kidney, tumour), ``features=64``, instance or batch norm: depth 18: 45,684,771 (encoder
    33,160,000, the same as MONAI's ``resnet18`` body with option-B shortcuts); depth 34: 75,994,403
    (encoder 63,469,632). The decoder adds 12,524,672 (2,818,048 in the up-convolutions). A
    2D ResNet-18 body has 11.2 M parameters: 3x3x3 kernels hold 3x the weights of 3x3 ones.

    The write-up fixes only "3D U-Net with a ResNet-18 encoder" (TensorFlow/Keras; the
    decoder is unspecified), so the decoder above is our choice. ``dropout`` (default 0, not
    in the write-up) adds Dropout3d after each decoder conv-norm-act, e.g. for Monte-Carlo
    dropout; the encoder has none, as in He et al.

    Deep supervision (default off, not in the write-up) follows nnU-Net (Isensee et al. 2021;
    see ``blocks.DeepSupervisionHeads``): ``deep_supervision=True`` adds a 1x1x1 head on each
    decoder step below full resolution (one per halving, the 1/2 .. ``divisor``/2 steps), and
    in training mode the network returns one logit map per decoder step, highest resolution
    first, each half the size of the one before (for ``volseg.losses.DeepSupervisionLoss``):
    5 maps, down to 1/16, with the ResNet stem. In eval mode it returns the one
    full-resolution tensor, identical to the output without deep supervision for the same
    weights. The heads add ``c * out_channels + out_channels`` parameters per step of width
    ``c``: 3 * (64 + 64 + 128 + 256) + 4 * 3 = 1,548 for the configuration counted above.

    Args:
        in_channels: image channels (modalities).
        out_channels: number of classes (logit channels).
        depth: ResNet depth, 18 or 34.
        features: stem and first-stage width (64 in ResNet); stages double it.
        norm: "batch", "instance", "group" or "none" (see ``blocks.make_norm``).
        act: "relu", "leaky_relu", "prelu", "gelu" or "none" (see ``blocks.make_act``).
        dropout: Dropout3d probability after each decoder conv-norm-act, in [0, 1).
        stem_kernel: odd cubic kernel edge of the stem conv (7 in ResNet), voxels.
        stem_stride: stride of the stem conv, 2 (ResNet) or 1.
        stem_pool: max pool after the stem (ResNet has one).
        deep_supervision: in training mode, return the list of per-step logits described
            above.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int = 18,
        features: int = 64,
        norm: str = "instance",
        act: str = "relu",
        dropout: float = 0.0,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(in_channels, out_channels, features, norm, act, dropout)
        if depth not in RESUNET_DEPTHS:
            raise ValueError(f"depth must be one of {RESUNET_DEPTHS}, got {depth!r}")
        check_deep_supervision(deep_supervision)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.encoder = ResNetEncoder3d(
            in_channels, depth, features, norm, act, stem_kernel, stem_stride, stem_pool
        )
        # The deepest encoder feature at each reduction is that resolution's skip.
        skips = dict(zip(self.encoder.reductions, range(len(self.encoder.reductions))))
        self._skip_index: list[int | None] = []
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        widths = []  # each decoder step's output channels, coarsest first
        cin = self.encoder.channels[-1]
        reduction = self.encoder.divisor // 2
        while reduction >= 1:
            index = skips.get(reduction)
            skip = 0 if index is None else self.encoder.channels[index]
            width = skip if skip else max(features // 2, 1)
            self._skip_index.append(index)
            self.ups.append(nn.ConvTranspose3d(cin, cin, 2, stride=2, bias=False))
            self.decoders.append(
                nn.Sequential(
                    ConvNormAct(cin + skip, width, 3, norm=norm, act=act, dropout=dropout),
                    ConvNormAct(width, width, 3, norm=norm, act=act, dropout=dropout),
                )
            )
            widths.append(width)
            cin = width
            reduction //= 2
        self.head = nn.Conv3d(cin, out_channels, kernel_size=1)
        # Built only when used, so deep_supervision=False keeps the parameters as they were.
        self.aux_heads = (
            DeepSupervisionHeads(widths[::-1], out_channels) if deep_supervision else None
        )

    @property
    def divisor(self) -> int:
        """Spatial sizes (voxels) must be multiples of this (32 with the ResNet stem)."""
        return self.encoder.divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (N, out_channels, X, Y, Z) for images (N, in_channels, X, Y, Z); a list,
        highest resolution first, only when ``deep_supervision`` is on and the module is
        training (see the class docstring)."""
        check_input(x, self.in_channels, self.divisor, self.encoder.norm)
        features = self.encoder(x)
        x = features[-1]
        supervise = self.aux_heads is not None and self.training
        decoded = []  # every decoder step's output, coarsest first, for deep supervision
        for up, decoder, index in zip(self.ups, self.decoders, self._skip_index):
            x = up(x)
            if index is not None:
                x = torch.cat([features[index], x], dim=1)
            x = decoder(x)
            if supervise:
                decoded.append(x)
        return supervised_logits(self.head, self.aux_heads if supervise else None, x, decoded)
