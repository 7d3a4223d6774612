"""Patch size, batch size, normalisation and U-Net topology that fit a memory budget.

nnU-Net v2's 3d_fullres planning (Isensee et al. 2021, Nature Methods 18:203, Methods and
Fig. 2; ``ExperimentPlanner.get_plans_for_configuration``), with the memory counted rather than
approximated (`volseg.planning.memory`):

1. start from a patch of 256**3 voxels shaped like a cube in millimetres, no larger than the
   median case;
2. derive the topology for it (`volseg.planning.topology`) and count one training step's
   memory at the smallest batch; while that is over budget, take one divisor's worth off the
   axis where the patch is largest relative to the median case, and derive the topology anew;
3. fill the budget with patches: the batch size that fits, but no more than covers 5% of the
   dataset's voxels per step, and at least 2;
4. the normalisation that suits that batch: instance norm below 8 patches (BatchNorm's
   statistics over a few heterogeneous patches make the validation curve swing,
   docs/benchmarks.md), BatchNorm from 8 on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from volseg.inference.norm_checks import MIN_BATCH_NORM_PATCHES
from volseg.models.dynamic_unet import DynamicUNet
from volseg.planning.memory import PARAMETER_COPIES, MemoryEstimate, estimate_training_memory
from volseg.planning.topology import MIN_FEATURE_MAP, Topology, level_features, plan_topology

# nnU-Net's starting patch (voxels) and the share of the dataset one batch may cover.
INITIAL_PATCH_VOXELS = 256**3
MAX_DATASET_FRACTION = 0.05


@dataclass(frozen=True)
class NetworkPlan:
    """What `plan_network` chose.

    Attributes:
        topology: strides, kernels and the patch size (x, y, z voxels).
        features: channels per level.
        batch_size: patches per step.
        norm: ``instance`` or ``batch``.
        deep_supervision: whether the coarser decoder levels are supervised too.
        memory: the estimate for one training step at ``batch_size``.
        budget_gb: the budget it was fitted to (GiB).
    """

    topology: Topology
    features: list[int]
    batch_size: int
    norm: str
    deep_supervision: bool
    memory: MemoryEstimate
    budget_gb: float

    @property
    def patch_size(self) -> list[int]:
        return self.topology.patch_size

    def model_settings(self) -> dict:
        """The `DynamicUNet` arguments (``conf/model/dynamic_unet.yaml``'s keys)."""
        return {
            "features": self.features,
            "strides": [s if len(set(s)) > 1 else s[0] for s in self.topology.strides],
            "kernel_sizes": [k if len(set(k)) > 1 else k[0] for k in self.topology.kernel_sizes],
            "norm": self.norm,
            "deep_supervision": self.deep_supervision,
        }


def initial_patch(
    spacing: Sequence[float], median_shape: Sequence[int], smallest: int = 1
) -> list[int]:
    """``INITIAL_PATCH_VOXELS`` voxels spanning equal millimetres on every axis, clipped to the
    median shape but at least ``smallest`` voxels (the sampler pads smaller cases)."""
    inverse = 1 / np.asarray(spacing, dtype=float)
    scale = (INITIAL_PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)
    return [max(smallest, min(int(round(v)), int(m)))
            for v, m in zip(inverse * scale, median_shape, strict=True)]


def plan_network(
    spacing: Sequence[float],
    median_shape: Sequence[int],
    in_channels: int,
    num_classes: int,
    dataset_voxels: float,
    gpu_memory_gb: float = 8.0,
    base_features: int = 32,
    max_features: int = 320,
    deep_supervision: bool = True,
    convs_per_stage: int = 2,
    min_batch: int = 2,
    min_feature_map: int = MIN_FEATURE_MAP,
) -> NetworkPlan:
    """Plan the patch, batch, normalisation and `DynamicUNet` for one dataset.

    Args:
        spacing: the target spacing (x, y, z) in mm.
        median_shape: the median case shape (voxels) at that spacing.
        in_channels: image channels.
        num_classes: classes, background included.
        dataset_voxels: voxels of all training cases at that spacing (caps the batch).
        gpu_memory_gb: memory one training step may take on one device (GiB; nnU-Net's 8).
        base_features: channels of the first level (nnU-Net: 32), doubling per level.
        max_features: the cap on channels (nnU-Net: 320).
        deep_supervision: supervise the coarser decoder levels too (nnU-Net does).
        convs_per_stage: conv-norm-act layers per level.
        min_batch: the smallest batch (nnU-Net: 2).
        min_feature_map: no axis is pooled below this many voxels.

    Raises:
        ValueError: the smallest patch the network takes does not fit ``gpu_memory_gb``.
    """
    if gpu_memory_gb <= 0:
        raise ValueError(f"plan.gpu_memory_gb must be positive, got {gpu_memory_gb}")
    budget = gpu_memory_gb * 2**30
    # 3x the smallest feature map lets at least one axis pool: a U-Net of two levels or more
    patch = initial_patch(spacing, median_shape, 3 * min_feature_map)
    while True:
        topology = plan_topology(spacing, patch, min_feature_map)
        features = level_features(topology.levels, base_features, max_features)
        build = functools.partial(
            DynamicUNet, in_channels, num_classes, features, topology.strides,
            topology.kernel_sizes, convs_per_stage, deep_supervision=deep_supervision)
        memory = estimate_training_memory(build, in_channels, topology.patch_size, min_batch)
        if memory.training <= budget:
            break
        relative = [p / max(m, 1) for p, m in zip(topology.patch_size, median_shape, strict=True)]
        smallest = 3 * min_feature_map  # room for one pooling, as the initial patch has
        shrinkable = [a for a in range(3)
                      if topology.patch_size[a] - topology.divisors[a] >= smallest]
        if not shrinkable:
            raise ValueError(
                f"plan.gpu_memory_gb={gpu_memory_gb}: even a {topology.patch_size} patch at "
                f"batch {min_batch} needs {memory.training_gb:.2f} GiB; raise it or lower "
                f"plan.base_features")
        axis = max(shrinkable, key=lambda a: relative[a])
        patch = list(topology.patch_size)
        patch[axis] -= topology.divisors[axis]

    single = estimate_training_memory(build, in_channels, topology.patch_size, 1)
    fixed = PARAMETER_COPIES * single.parameters
    per_patch = single.training - fixed
    fits = int((budget - fixed) // per_patch)
    covers = round(dataset_voxels * MAX_DATASET_FRACTION / math.prod(topology.patch_size))
    batch_size = max(min_batch, min(fits, covers))

    def step_memory(batch: int) -> MemoryEstimate:
        # counted with the norm the plan trains with at that batch (the fit above used
        # DynamicUNet's default, instance norm)
        return estimate_training_memory(functools.partial(build, norm=norm_for(batch)),
                                        in_channels, topology.patch_size, batch)

    memory = step_memory(batch_size)
    while memory.training > budget and batch_size > min_batch:  # BatchNorm's own tensors
        batch_size -= 1
        memory = step_memory(batch_size)
    return NetworkPlan(topology, features, batch_size, norm_for(batch_size), deep_supervision,
                       memory, gpu_memory_gb)


def norm_for(batch_size: int) -> str:
    """Instance norm below `MIN_BATCH_NORM_PATCHES` patches per step, BatchNorm from there."""
    return "batch" if batch_size >= MIN_BATCH_NORM_PATCHES else "instance"

