"""Residual 3D U-Net of Isensee et al. 2017, "Brain Tumor Segmentation and Radiomics Survival
Prediction: Contribution to the BRATS 2017 Challenge" (arXiv:1802.10508), Fig. 1."""

from __future__ import annotations

import torch
from torch import nn

from volseg.models.blocks import (
    ConvNormAct,
    check_deep_supervision,
    check_network_args,
    make_act,
    make_norm,
)

# Fig. 1 has segmentation layers at the three highest-resolution decoder levels.
_SEG_LEVELS = 3


class ContextModule(nn.Module):
    """Pre-activation residual block, the context module of Isensee et al. 2017 (Sec. 2.2).

    ``x + conv(act(norm(dropout(conv(act(norm(x)))))))``: two 3x3x3 convolutions, each preceded
    by normalisation and activation (He et al. 2016, ECCV, "identity mappings"), with a dropout
    layer between them. The identity path is untouched, so the block's first operation on the
    residual branch is a norm, never a convolution.

    Args:
        channels: input and output feature channels.
        norm: see ``blocks.make_norm``; the convolutions carry a bias only for "none".
        act: see ``blocks.make_act``.
        dropout: element-wise dropout probability between the two convolutions (0.3 in the
            paper; 0 disables it).
    """

    def __init__(self, channels: int, norm: str, act: str, dropout: float) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        bias = norm == "none"
        self.block = nn.Sequential(
            make_norm(norm, channels),
            make_act(act),
            nn.Conv3d(channels, channels, 3, padding=1, bias=bias),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            make_norm(norm, channels),
            make_act(act),
            nn.Conv3d(channels, channels, 3, padding=1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResidualUNet3D(nn.Module):
    """Residual 3D U-Net with deep supervision, Isensee et al. 2017, Fig. 1 and Sec. 2.2.

    Context (encoder) pathway, ``num_levels`` levels with ``c = features * 2**level`` channels
    (16, 32, 64, 128, 256 in the paper): a 3x3x3 convolution (stride 1 at the first level,
    stride 2 at the others, which does the downsampling), a context module
    (:class:`ContextModule`, a pre-activation residual block with dropout 0.3) whose output is
    added to that convolution's output, then norm and activation. The result is both the skip
    features of the level and the input of the next level's stride-2 convolution.

    Localization (decoder) pathway, from the bottom up: an upsampling module (nearest-neighbour
    upscale x2, i.e. every voxel repeated twice per axis, then a 3x3x3 conv-norm-act that halves
    the channels), concatenation with the skip features, then a localization module (3x3x3
    conv-norm-act, then a 1x1x1 conv-norm-act that halves the channels back to ``c``). At the
    full-resolution level, as in Fig. 1, a single 3x3x3 conv-norm-act with ``2 * features``
    channels replaces the localization module.

    Deep supervision (Fig. 1): a segmentation layer (1x1x1 convolution to ``out_channels``)
    reads the decoder output of each of the three highest-resolution levels (fewer if
    ``num_levels < 4``). Starting from the coarsest, each map is upscaled x2 (nearest) and
    added element-wise to the next finer one; the full-resolution sum is the network output
    (logits, no softmax). This summation is part of the architecture and always runs.

    Output contract:

    * ``deep_supervision=False``, or the module in eval mode: one tensor
      (N, out_channels, X, Y, Z), so sliding-window inference needs no special case.
    * ``deep_supervision=True`` in training mode: a list of logits, highest resolution first,
      ``[(N, K, X, Y, Z), (N, K, X/2, Y/2, Z/2), (N, K, X/4, Y/4, Z/4)]``. Entry ``i`` is the
      running sum at level ``i`` (the level's segmentation layer plus the upscaled sum from
      below), so entry 0 equals the eval-mode output. This is the input
      ``volseg.losses.DeepSupervisionLoss`` expects; it downsamples the target to each size.

    Every feature-computing convolution is followed (or, in the context modules, preceded) by
    instance norm and leaky ReLU with slope 1e-2, the paper's choice. Convolutions feeding a
    normalisation have no bias, since the norm's mean subtraction would cancel it.

    Parameter count, default config with ``in_channels=4, out_channels=3`` (BraTS): 9,464,137
    (the paper states none), of which 5,893,728 in the context pathway, 3,570,016 in the
    localization pathway and 393 in the three segmentation layers; instance norm's affine scale
    and shift are counted (it keeps no running statistics). With ``norm="none"`` the
    convolutions get biases instead: 9,461,705.

    Deliberate differences from the paper:

    * The figure does not show where the normalisation sits between a level's residual sum and
      the convolutions that read it; we apply norm + activation once to the sum, so every
      convolution in the network reads normalised input, which is the point of pre-activation.
    * Dropout drops individual activations (``nn.Dropout``), the usual meaning of "a dropout
      layer"; the paper does not say whether whole channels were dropped.
    * ``norm``, ``act``, ``features``, ``num_levels`` and ``dropout`` are configurable; their
      defaults are the paper's.
    * The seed write-up that cites this paper for prostate MR (CSIRO HipMRI, 6 labels)
      describes max pooling and transposed convolutions; we follow the paper's stride-2
      convolutions and upscale-then-convolve instead.

    Spatial sizes (voxels) must be multiples of :attr:`divisor`, ``2**(num_levels - 1)``, so
    that every upscaled map matches its skip features exactly. In training, instance norm
    also needs more than one voxel per channel at the bottom level (e.g. 128**3 in the paper
    gives 8**3 there).

    Args:
        in_channels: image channels (4 MR modalities in BraTS).
        out_channels: number of classes (logit channels).
        features: channels at the first level, doubled per level (16 in the paper).
        num_levels: resolution levels including the bottom one (5 in the paper).
        norm: "batch", "instance", "group" or "none" (see ``blocks.make_norm``).
        act: "relu", "leaky_relu", "prelu", "gelu" or "none" (see ``blocks.make_act``).
        dropout: dropout probability inside every context module, in [0, 1) (0.3 in the paper).
        deep_supervision: in training mode, return the list of per-level logits described above.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features: int = 16,
        num_levels: int = 5,
        norm: str = "instance",
        act: str = "leaky_relu",
        dropout: float = 0.3,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_network_args(in_channels, out_channels, features, norm, act, dropout)
        if num_levels < 2:
            raise ValueError(
                f"num_levels must be >= 2 (one downsampling at least), got {num_levels}"
            )
        check_deep_supervision(deep_supervision)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_levels = num_levels
        self.deep_supervision = deep_supervision
        bias = norm == "none"
        widths = [features * 2**level for level in range(num_levels)]

        # encoders[level]: (strided) conv -> context module (residual) -> norm -> act.
        self.encoders = nn.ModuleList()
        cin = in_channels
        for level, c in enumerate(widths):
            stride = 1 if level == 0 else 2
            self.encoders.append(
                nn.Sequential(
                    nn.Conv3d(cin, c, 3, stride=stride, padding=1, bias=bias),
                    ContextModule(c, norm, act, dropout),
                    make_norm(norm, c),
                    make_act(act),
                )
            )
            cin = c

        # ups[level] / localizations[level] serve decoder level `level` (0 = full resolution).
        self.ups = nn.ModuleList()
        self.localizations = nn.ModuleList()
        for level in range(num_levels - 1):
            c = widths[level]
            self.ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    ConvNormAct(widths[level + 1], c, 3, norm=norm, act=act),
                )
            )
            if level == 0:
                # Fig. 1: the top level keeps the 2 * features concatenated channels.
                self.localizations.append(ConvNormAct(2 * c, 2 * c, 3, norm=norm, act=act))
            else:
                self.localizations.append(
                    nn.Sequential(
                        ConvNormAct(2 * c, 2 * c, 3, norm=norm, act=act),
                        ConvNormAct(2 * c, c, 1, norm=norm, act=act),
                    )
                )

        num_seg = min(_SEG_LEVELS, num_levels - 1)
        self.seg_layers = nn.ModuleList(
            nn.Conv3d(2 * widths[0] if level == 0 else widths[level], out_channels, 1)
            for level in range(num_seg)
        )
        self.upscale = nn.Upsample(scale_factor=2, mode="nearest")

    @property
    def divisor(self) -> int:
        """Spatial sizes (voxels) must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits for images (N, C, X, Y, Z); a list, highest resolution first, only when
        ``deep_supervision`` is on and the module is training (see the class docstring)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.divisor for s in spatial):
            raise ValueError(
                f"every spatial size must be a multiple of divisor={self.divisor} "
                f"(2**(num_levels-1)), got {spatial}"
            )

        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        x = skips.pop()  # the bottom level feeds the decoder directly

        seg_maps: list[torch.Tensor] = []  # coarsest first
        for level in reversed(range(self.num_levels - 1)):
            x = self.localizations[level](torch.cat([skips[level], self.ups[level](x)], dim=1))
            if level < len(self.seg_layers):
                seg_maps.append(self.seg_layers[level](x))

        sums: list[torch.Tensor] = []
        for seg in seg_maps:
            sums.append(seg if not sums else seg + self.upscale(sums[-1]))
        if self.deep_supervision and self.training:
            return sums[::-1]
        return sums[-1]
