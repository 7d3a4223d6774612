"""3D building blocks shared by the networks: normalisation, activation, conv-norm-act.

Every network in ``volseg.models`` builds its layers from these factories, so a norm or
activation name means the same thing in UNet3D as in the residual networks.
"""

from __future__ import annotations

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
        kernel_size: cubic kernel edge in voxels.
        stride: convolution stride in voxels.
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
        kernel_size: int = 3,
        stride: int = 1,
        padding: str = "same",
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        _check_choice("padding", padding, PADDINGS)
        _check_choice("norm", norm, NORMS)
        _check_choice("act", act, ACTS)
        if padding == "same" and kernel_size % 2 == 0:
            raise ValueError(f"padding='same' needs an odd kernel_size, got {kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        layers: list[nn.Module] = [
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2 if padding == "same" else 0,
                bias=norm == "none",
            ),
            make_norm(norm, out_channels),
            make_act(act),
        ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)
