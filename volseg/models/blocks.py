"""3D building blocks shared by the networks: normalisation, activation, conv-norm-act.

Every network in ``volseg.models`` builds its layers from these factories, so a norm or
activation name means the same thing in UNet3D as in the residual networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "instance", "group", "none")
ACTS = ("relu", "leaky_relu", "prelu", "gelu", "none")
PADDINGS = ("same", "valid")

# Group norm uses at most this many groups (Wu & He 2018 found 8-32 groups work alike; 8 keeps
# enough channels per group for the narrow layers of small test networks).
_MAX_GROUPS = 8


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_network_args(
    in_channels: int, out_channels: int, features: int, norm: str, act: str, dropout: float
) -> None:
    """Validate the arguments every volseg network takes; the ValueError names the argument."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("features", features)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    _check_choice("norm", norm, NORMS)
    _check_choice("act", act, ACTS)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def check_deep_supervision(deep_supervision: bool) -> None:
    """Raise ValueError unless ``deep_supervision`` is a bool (a YAML ``1`` or ``"true"`` is
    refused rather than read as truthy)."""
    if not isinstance(deep_supervision, bool):
        raise ValueError(f"deep_supervision must be True or False, got {deep_supervision!r}")


def per_axis(name: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    """``value`` as one positive integer per spatial axis (x, y, z); one integer is used for
    all three. The ValueError names ``name``."""
    values = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in values):
        raise ValueError(f"{name} must be a positive integer or three of them, got {value!r}")
    return values  # type: ignore[return-value]


def group_count(channels: int, max_groups: int = _MAX_GROUPS) -> int:
    """Largest number of groups <= ``max_groups`` that divides ``channels`` exactly."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Build a 3D normalisation layer for ``channels`` feature maps.

    Args:
        norm: "batch" (BatchNorm3d), "instance" (InstanceNorm3d with a learned affine, as
            nnU-Net uses), "group" (GroupNorm, see :func:`group_count`) or "none" (identity).
        channels: number of feature channels.
    """
    _check_choice("norm", norm, NORMS)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    return nn.Identity()


def make_act(act: str) -> nn.Module:
    """Build an activation: "relu", "leaky_relu" (slope 0.01), "prelu" (one learned slope),
    "gelu" or "none" (identity, for the conv-norm before a residual addition)."""
    _check_choice("act", act, ACTS)
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(negative_slope=0.01, inplace=True)
    if act == "prelu":
        return nn.PReLU()
    if act == "gelu":
        return nn.GELU()
    return nn.Identity()


class ConvNormAct(nn.Sequential):
    """Conv3d -> norm -> activation [-> Dropout3d].

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels.
        kernel_size: kernel edge in voxels: one for a cube, or one per axis (x, y, z).
        stride: convolution stride in voxels: one for every axis, or one per axis.
        padding: "same" pads ``kernel_size // 2`` voxels per side (size kept at stride 1; needs
            an odd kernel), "valid" pads nothing (each side shrinks by ``kernel_size // 2``).
        norm: see :func:`make_norm`. The convolution has a bias only for "none", because a
            normalisation layer subtracts the per-channel mean and would cancel it.
        act: see :func:`make_act`.
        dropout: channel dropout probability after the activation (0 disables it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: str = "same",
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        kernel_size, stride = per_axis("kernel_size", kernel_size), per_axis("stride", stride)
        _check_choice("padding", padding, PADDINGS)
        _check_choice("norm", norm, NORMS)
        _check_choice("act", act, ACTS)
        if padding == "same" and any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"padding='same' needs an odd kernel_size, got {list(kernel_size)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        layers: list[nn.Module] = [
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=tuple(k // 2 for k in kernel_size) if padding == "same" else 0,
                bias=norm == "none",
            ),
            make_norm(norm, out_channels),
            make_act(act),
        ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


class BasicBlock3d(nn.Module):
    """Residual block of two 3x3x3 convolutions, He et al. 2016 (CVPR) Fig. 2 left, in 3D as in
    Hara et al. 2018 (CVPR) and MedicalNet (Chen et al. 2019); used by ResNet-18 and -34.

    ``x -> conv-norm-act -> conv-norm -> + shortcut(x) -> act``. The shortcut is the identity
    when shapes match, else a 1x1x1 convolution with stride plus norm (the paper's option B,
    as torchvision and MONAI build it).

    Args:
        in_channels: input feature channels.
        channels: width of both 3x3x3 convolutions; the output has ``channels * expansion``
            (= ``channels``) channels.
        stride: stride of the first convolution and of the shortcut (2 halves each size,
            rounding up).
        norm: see :func:`make_norm`; convolutions carry a bias only for "none".
        act: see :func:`make_act`; applied after the first conv and after the addition.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        out_channels = channels * self.expansion
        self.conv1 = ConvNormAct(in_channels, channels, 3, stride=stride, norm=norm, act=act)
        # No activation before the addition: the residual branch must be able to go negative.
        self.conv2 = ConvNormAct(channels, out_channels, 3, norm=norm, act="none")
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck3d(nn.Module):
    """Bottleneck residual block, He et al. 2016 (CVPR) Fig. 5 right, in 3D; used by
    ResNet-50/101.

    ``1x1x1 conv (channels) -> 3x3x3 conv (channels) -> 1x1x1 conv (4 * channels)``, each
    followed by norm and, except the last, the activation; the shortcut (identity or 1x1x1
    conv + norm with stride) is added before the final activation. The stride sits on the
    3x3x3 convolution (torchvision's "ResNet v1.5", also MedicalNet's choice) rather than on
    the first 1x1x1 as in the paper: a strided 1x1x1 conv skips 7 of every 8 voxels unseen.
    The parameter count is the same either way.

    Args:
        in_channels: input feature channels.
        channels: width of the two inner convolutions; the output has ``4 * channels``.
        stride: stride of the 3x3x3 convolution and of the shortcut.
        norm: see :func:`make_norm`.
        act: see :func:`make_act`.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        out_channels = channels * self.expansion
        self.conv1 = ConvNormAct(in_channels, channels, 1, norm=norm, act=act)
        self.conv2 = ConvNormAct(channels, channels, 3, stride=stride, norm=norm, act=act)
        self.conv3 = ConvNormAct(channels, out_channels, 1, norm=norm, act="none")
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module:
    """Identity if the shapes match, else a strided 1x1x1 projection + norm (option B)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvNormAct(in_channels, out_channels, 1, stride=stride, norm=norm, act="none")


class SqueezeExcitation3d(nn.Module):
    """Squeeze-and-excitation channel gate of Hu et al. 2018 (CVPR), Fig. 2, for 3D maps.

    ``s = sigmoid(W2 relu(W1 z + b1) + b2)`` with ``z`` the per-channel mean over the spatial
    axes (global average pooling); the output is ``x`` with channel ``c`` scaled by ``s[c]``.

    Args:
        channels: feature channels of the input (and output).
        reduction: the bottleneck FC layer has ``max(1, channels // reduction)`` units (Hu et
            al. use 16); the floor of 1 keeps narrow layers valid.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=tuple(range(2, x.ndim)))
        s = self.fc2(nn.functional.relu(self.fc1(z))).sigmoid()
        return x * s.reshape(*s.shape, *([1] * (x.ndim - 2)))


class Res2NetBlock3d(nn.Module):
    """3D Res2Net block of Gao et al. 2019 (TPAMI), Fig. 2(b) and Eq. 1, with the SE gate of
    their Fig. 3.

    A 1x1x1 conv-norm-act gives ``out_channels`` maps, split into ``scale`` groups
    ``x_1..x_s`` of ``out_channels // scale`` channels. Following Eq. 1, ``y_1 = x_1``,
    ``y_2 = K_2(x_2)`` and ``y_i = K_i(x_i + y_{i-1})`` for ``i > 2``, each ``K_i`` a 3x3x3
    conv-norm-act, so group ``i`` sees receptive fields of 1 to ``i - 1`` stacked 3x3x3 convs.
    The ``y_i`` are concatenated, fused by a 1x1x1 conv-norm, gated by squeeze-and-excitation,
    added to the shortcut (identity, or a 1x1x1 conv-norm projection when the channels or the
    stride change) and passed through the activation.

    Unlike the ImageNet bottleneck, the hierarchy runs at the full ``out_channels`` width
    (no 4x expansion): in a U-Net the block replaces a pair of plain convolutions of that width.
    A ``stride`` > 1 sits on the first 1x1x1 conv and the projection, as in the original
    ResNet bottleneck, so the hierarchy works on the downsampled grid.

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels; must be divisible by ``scale``.
        scale: number of groups ``s`` (>= 2; 4 in Gao et al.).
        stride: downsampling stride in voxels of the 1x1x1 input conv and the projection.
        se_reduction: SE reduction ratio (see :class:`SqueezeExcitation3d`); 0 drops the gate.
        norm: see :func:`make_norm`.
        act: see :func:`make_act`; used inside the hierarchy and after the residual addition.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int = 4,
        stride: int = 1,
        se_reduction: int = 16,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if scale < 2:
            raise ValueError(f"scale must be >= 2 (at least one hierarchical group), got {scale}")
        if out_channels % scale:
            raise ValueError(f"out_channels must be divisible by scale={scale}, got {out_channels}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if se_reduction < 0:
            raise ValueError(f"se_reduction must be >= 0 (0 disables SE), got {se_reduction}")
        _check_choice("norm", norm, NORMS)
        _check_choice("act", act, ACTS)

        self.scale = scale
        width = out_channels // scale
        self.reduce = ConvNormAct(in_channels, out_channels, 1, stride=stride, norm=norm, act=act)
        # K_2..K_s; y_1 = x_1 has no convolution.
        self.convs = nn.ModuleList(
            ConvNormAct(width, width, 3, norm=norm, act=act) for _ in range(scale - 1)
        )
        # No activation before the addition, so the residual branch can output negatives.
        self.fuse = ConvNormAct(out_channels, out_channels, 1, norm=norm, act="none")
        self.se = SqueezeExcitation3d(out_channels, se_reduction) if se_reduction else nn.Identity()
        if in_channels == out_channels and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvNormAct(
                in_channels, out_channels, 1, stride=stride, norm=norm, act="none"
            )
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.reduce(x).chunk(self.scale, dim=1)
        ys = [xs[0]]
        for i, conv in enumerate(self.convs, start=1):
            ys.append(conv(xs[i] if i == 1 else xs[i] + ys[-1]))
        out = self.se(self.fuse(torch.cat(ys, dim=1)))
        return self.act(out + self.shortcut(x))


class DeepSupervisionHeads(nn.Module):
    """Auxiliary 1x1x1 segmentation heads for deep supervision as nnU-Net builds them (Isensee
    et al. 2021, Nature Methods 18:203, Methods, "Fixed parameters"; nnU-Net v2's
    ``PlainConvUNet`` decoder).

    A U-Net's decoder has one level per resolution except the bottom one, and the network's own
    head reads level 0 (full resolution). This module adds one 1x1x1 convolution with bias,
    ``decoder_channels[i] -> out_channels``, on every other decoder level ``i >= 1``, so a
    network returns one logit map per decoder level, highest resolution first. The paper
    supervises "all but the two lowest resolutions": nnU-Net v2 still builds the lowest decoder
    level's head and gives its loss weight 0, which ``volseg.losses.DeepSupervisionLoss``
    reproduces with ``weights`` ending in 0. A network builds this module only when deep
    supervision is on, so switching it off leaves the parameters as they were.

    Args:
        decoder_channels: output channels of every decoder level, full resolution first.
        out_channels: number of classes (logit channels).
    """

    def __init__(self, decoder_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if len(decoder_channels) < 1 or min(decoder_channels) < 1:
            raise ValueError(
                "decoder_channels must list >= 1 positive channel counts, full resolution "
                f"first, got {list(decoder_channels)}"
            )
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.num_levels = len(decoder_channels)
        self.heads = nn.ModuleList(
            nn.Conv3d(c, out_channels, kernel_size=1) for c in decoder_channels[1:]
        )

    def forward(self, logits: torch.Tensor, decoded: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[logits, head_1(decoded[1]), ...]``, highest resolution first, for the network's
        full-resolution ``logits`` and the output of every decoder level, full resolution
        first (``decoded[0]`` is the one ``logits`` came from, and is not read)."""
        if len(decoded) != self.num_levels:
            raise ValueError(
                f"expected the outputs of {self.num_levels} decoder levels, got {len(decoded)}"
            )
        return [logits, *(head(x) for head, x in zip(self.heads, decoded[1:], strict=True))]


def supervised_logits(
    head: nn.Module, aux_heads: DeepSupervisionHeads | None, x: torch.Tensor,
    decoded: Sequence[torch.Tensor],
) -> torch.Tensor | list[torch.Tensor]:
    """A U-Net's output from its last decoder level ``x``: ``head(x)``, or, given ``aux_heads``
    (deep supervision, training), every level's logits from ``decoded``, the decoder levels'
    outputs collected coarsest first as the decoder runs."""
    logits = head(x)
    return logits if aux_heads is None else aux_heads(logits, decoded[::-1])
