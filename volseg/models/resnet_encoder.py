"""3D ResNet encoder of He et al. 2016 (CVPR), "Deep Residual Learning for Image Recognition",
Table 1, with every 2D convolution made 3D as in Hara et al. 2018 (CVPR) and MedicalNet
(Chen et al. 2019). Shared by :class:`~volseg.models.resunet.ResUNet` and
:class:`~volseg.models.resnet_seg.ResNetSeg`."""

from __future__ import annotations

import torch
from torch import nn

from volseg.models.blocks import (
    ACTS,
    NORMS,
    BasicBlock3d,
    Bottleneck3d,
    ConvNormAct,
    _check_choice,
)

# Table 1 of He et al. 2016: block type and blocks per stage (conv2_x .. conv5_x).
STAGES: dict[int, tuple[type[BasicBlock3d] | type[Bottleneck3d], tuple[int, int, int, int]]] = {
    10: (BasicBlock3d, (1, 1, 1, 1)),  # not in the paper; Hara et al. and MedicalNet use it
    18: (BasicBlock3d, (2, 2, 2, 2)),
    34: (BasicBlock3d, (3, 4, 6, 3)),
    50: (Bottleneck3d, (3, 4, 6, 3)),
    101: (Bottleneck3d, (3, 4, 23, 3)),
}
DEPTHS = tuple(STAGES)


class ResNetEncoder3d(nn.Module):
    """3D ResNet without its pooling and classifier: stem, optional max pool, four stages.

    Stem: a ``stem_kernel``-cubed conv-norm-act to ``width`` channels with stride
    ``stem_stride`` (7 and 2 in the paper), then, if ``stem_pool``, a 3x3x3 max pool with
    stride 2. Stage ``i`` (0..3, the paper's conv2_x..conv5_x) stacks ``STAGES[depth]`` blocks
    of width ``width * 2**i`` (output ``width * 2**i * expansion`` channels); stages 1-3 halve
    the size in their first block. Shortcuts are identity or 1x1x1 projections (option B).

    :meth:`forward` returns the features of the stem and of every stage, shallowest first, so
    a decoder can take skips at every resolution. With the paper's stem their reductions
    (input size / feature size) are 2, 4, 8, 16, 32.

    Args:
        in_channels: image channels.
        depth: 10, 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        width: stem and first-stage width (64 in the paper).
        norm: "batch", "instance", "group" or "none" (see ``blocks.make_norm``).
        act: "relu", "leaky_relu", "prelu", "gelu" or "none" (see ``blocks.make_act``).
        stem_kernel: odd cubic kernel edge of the stem conv, in voxels.
        stem_stride: stride of the stem conv, 1 or 2.
        stem_pool: 3x3x3 max pool with stride 2 after the stem.
    """

    def __init__(
        self,
        in_channels: int,
        depth: int = 18,
        width: int = 64,
        norm: str = "instance",
        act: str = "relu",
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if depth not in STAGES:
            raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        _check_choice("norm", norm, NORMS)
        _check_choice("act", act, ACTS)
        self.norm = norm
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be an odd number >= 1, got {stem_kernel}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be one of (1, 2), got {stem_stride!r}")

        block, counts = STAGES[depth]
        self.in_channels = in_channels
        self.depth = depth
        self.stem = ConvNormAct(
            in_channels, width, stem_kernel, stride=stem_stride, norm=norm, act=act
        )
        # Padding 1 makes the pool halve every even size exactly, like the strided convs.
        self.pool = nn.MaxPool3d(3, stride=2, padding=1) if stem_pool else nn.Identity()

        self.stages = nn.ModuleList()
        channels = [width]
        reductions = [stem_stride]
        reduction = stem_stride * (2 if stem_pool else 1)
        cin = width
        for i, count in enumerate(counts):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for j in range(count):
                blocks.append(
                    block(cin, width * 2**i, stride=stride if j == 0 else 1, norm=norm, act=act)
                )
                cin = width * 2**i * block.expansion
            self.stages.append(nn.Sequential(*blocks))
            channels.append(cin)
            reductions.append(reduction)
        self.channels: tuple[int, ...] = tuple(channels)
        self.reductions: tuple[int, ...] = tuple(reductions)

    @property
    def divisor(self) -> int:
        """Spatial sizes (voxels) must be multiples of this so every stride halves exactly."""
        return self.reductions[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features [stem, stage 1, .., stage 4]; entry ``k`` has ``channels[k]`` channels and
        spatial size ``input size / reductions[k]``."""
        x = self.stem(x)
        features = [x]
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def check_input(x: torch.Tensor, in_channels: int, divisor: int, norm: str = "none") -> None:
    """Raise ValueError unless ``x`` is (N, in_channels, X, Y, Z) with sizes divisible by
    ``divisor`` (the network's total downsampling, in voxels) and, under instance norm, more
    than one voxel left at the deepest level (a single voxel normalises to its bias alone)."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (N, {in_channels}, X, Y, Z), got {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if min(spatial) < 1 or any(s % divisor for s in spatial):
        raise ValueError(
            f"every spatial size must be a positive multiple of divisor={divisor} (the "
            f"network's total downsampling), got {spatial}"
        )
    if norm == "instance" and all(s == divisor for s in spatial):
        raise ValueError(
            f"a {'x'.join(map(str, spatial))} input is one voxel at the deepest level, where "
            f"instance norm has nothing to normalise: use at least {2 * divisor} voxels along one "
            "axis (data.patch_size), or model.norm=batch"
        )
