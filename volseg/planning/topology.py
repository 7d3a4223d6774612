"""A U-Net's depth, per-axis pooling strides and kernel sizes from the voxel spacing and patch.

nnU-Net's rule (Isensee et al. 2021, Nature Methods 18:203, Methods, "Network topology";
v2's ``get_pool_and_conv_props``): downsample an axis while its feature map stays at least
``2 * min_feature_map`` voxels long, and only the axes whose current spacing is within a factor
2 of the finest current spacing, so anisotropic data pools in-plane until its voxels are about
isotropic, then everywhere. A kernel is 1 along an axis until that axis's spacing has come within
a factor 2 of the finest, then 3 for good; the bottleneck's kernel is 3 along every axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# nnU-Net's smallest edge of the coarsest feature map.
MIN_FEATURE_MAP = 4


@dataclass(frozen=True)
class Topology:
    """One entry per resolution level, full resolution first (`volseg.models.DynamicUNet`'s).

    Attributes:
        strides: per level, the downsampling stride (x, y, z) into it; level 0's is 1.
        kernel_sizes: per level, the convolution kernel (x, y, z).
        patch_size: the patch, rounded up to a multiple of ``divisors``.
    """

    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]

    @property
    def levels(self) -> int:
        return len(self.strides)

    @property
    def divisors(self) -> list[int]:
        """Per axis, what every input size must be a multiple of: the product of its strides."""
        return [math.prod(s[axis] for s in self.strides) for axis in range(3)]


def plan_topology(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    min_feature_map: int = MIN_FEATURE_MAP,
    max_levels: int | None = None,
) -> Topology:
    """The U-Net topology nnU-Net plans for ``patch_size`` voxels of ``spacing`` mm.

    Args:
        spacing: voxel size (x, y, z) in mm at the network's input.
        patch_size: training patch (x, y, z) in voxels.
        min_feature_map: no axis is pooled below this many voxels (nnU-Net: 4).
        max_levels: at most this many levels (``None``: as many as the rule allows).

    Returns:
        The levels' strides and kernels, and the patch rounded up to their divisors.

    Raises:
        ValueError: non-positive spacing or patch size, or ``min_feature_map`` < 1.
    """
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive values (mm), got {list(spacing)}")
    if len(patch_size) != 3 or min(patch_size) < 1:
        raise ValueError(f"patch_size must be three positive sizes, got {list(patch_size)}")
    if min_feature_map < 1:
        raise ValueError(f"min_feature_map must be >= 1, got {min_feature_map}")
    current_spacing = [float(s) for s in spacing]
    current_size = [float(p) for p in patch_size]
    kernel = [1, 1, 1]
    strides, kernels = [[1, 1, 1]], []
    while max_levels is None or len(strides) < max_levels:
        long_enough = [a for a in range(3) if current_size[a] >= 2 * min_feature_map]
        if not long_enough:
            break
        finest = min(current_spacing[a] for a in long_enough)
        axes = [a for a in long_enough if current_spacing[a] / finest < 2]
        # Pooling a single axis needs more room: its feature map stays >= 1.5x the minimum.
        if len(axes) == 1 and current_size[axes[0]] < 3 * min_feature_map:
            break
        finest_overall = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[a] / finest_overall < 2 else 1
                  for a, k in enumerate(kernel)]
        kernels.append(list(kernel))
        stride = [2 if a in axes else 1 for a in range(3)]
        strides.append(stride)
        for a in axes:
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
    kernels.append([3, 3, 3])  # the bottleneck (or the only level)
    divisors = [math.prod(s[a] for s in strides) for a in range(3)]
    padded = [math.ceil(p / d) * d for p, d in zip(patch_size, divisors, strict=True)]
    return Topology(strides, kernels, padded)


def level_features(levels: int, base: int = 32, maximum: int = 320) -> list[int]:
    """Channels per level: ``base`` doubling per level, capped at ``maximum`` (nnU-Net's 32/320)."""
    if base < 1 or maximum < base:
        raise ValueError(f"need 1 <= base ({base}) <= maximum ({maximum}) features")
    return [min(base * 2**level, maximum) for level in range(levels)]
