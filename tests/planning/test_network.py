"""Patch, batch, normalisation and topology fitted to a memory budget."""

import functools
import math

import pytest
import torch

from volseg.models import DynamicUNet
from volseg.planning.memory import estimate_training_memory
from volseg.planning.network import initial_patch, plan_network

SMALL = {"base_features": 4, "max_features": 16}


def test_initial_patch_is_a_cube_in_millimetres_clipped_to_the_median_case():
    assert initial_patch([1.0, 1.0, 1.0], [300, 300, 300]) == [256, 256, 256]
    # 0.5 x 0.5 x 2 mm: four times the voxels in-plane as along z, 256**3 voxels in all
    assert initial_patch([0.5, 0.5, 2.0], [999, 999, 999]) == [406, 406, 102]
    assert initial_patch([1.0, 1.0, 1.0], [64, 300, 5], smallest=12) == [64, 256, 12]


def test_plan_fits_the_budget_and_keeps_the_median_aspect():
    plan = plan_network([0.8, 0.8, 2.5], [256, 256, 60], 1, 3, dataset_voxels=1e9,
                        gpu_memory_gb=0.25, **SMALL)
    assert plan.memory.training <= 0.25 * 2**30
    assert all(p % d == 0 for p, d in zip(plan.patch_size, plan.topology.divisors))
    # x and y are cut in turn (the one largest against the median goes first)
    x, y, z = plan.patch_size
    assert max(x, y) / min(x, y) <= 1.5 and min(x, y) > z
    # thick slices: the first level pools in-plane only, with in-plane kernels
    assert plan.topology.strides[1] == [2, 2, 1] and plan.topology.kernel_sizes[0] == [3, 3, 1]
    assert plan.features == [min(4 * 2**i, 16) for i in range(plan.topology.levels)]
    # a larger budget never plans a smaller patch
    larger = plan_network([0.8, 0.8, 2.5], [256, 256, 60], 1, 3, dataset_voxels=1e9,
                          gpu_memory_gb=1.0, **SMALL)
    assert math.prod(larger.patch_size) > math.prod(plan.patch_size)


def test_small_cases_fit_whole_and_the_batch_covers_five_percent_of_the_dataset():
    median, cases = [40, 40, 24], 200
    plan = plan_network([1.0, 1.0, 1.0], median, 1, 2, dataset_voxels=math.prod(median) * cases,
                        gpu_memory_gb=2.0, **SMALL)
    assert plan.patch_size == [40, 40, 24]  # already a multiple of the divisors (8, 8, 8)
    assert plan.batch_size == round(0.05 * cases) == 10
    assert plan.norm == "batch"  # 8 patches or more per step
    assert plan.memory.training <= 2 * 2**30
    # The memory is counted for the network it trains: with BatchNorm, at that batch.
    network = functools.partial(DynamicUNet, 1, 2, plan.features, plan.topology.strides,
                                plan.topology.kernel_sizes, 2, deep_supervision=True)
    batch_norm = estimate_training_memory(functools.partial(network, norm="batch"), 1,
                                          plan.patch_size, plan.batch_size)
    assert plan.memory.training == batch_norm.training


def test_few_cases_keep_the_smallest_batch_and_instance_norm():
    plan = plan_network([1.0, 1.0, 1.0], [40, 40, 24], 1, 2, dataset_voxels=40 * 40 * 24 * 10,
                        gpu_memory_gb=2.0, **SMALL)
    assert plan.batch_size == 2 and plan.norm == "instance"


def test_planned_network_trains_on_its_patch():
    plan = plan_network([0.8, 0.8, 2.5], [96, 96, 30], 2, 3, dataset_voxels=1e7,
                        gpu_memory_gb=0.1, **SMALL)
    network = DynamicUNet(2, 3, **plan.model_settings())
    outputs = network(torch.randn(plan.batch_size, 2, *plan.patch_size))
    assert plan.deep_supervision and len(outputs) == plan.topology.levels - 1
    assert outputs[0].shape == (plan.batch_size, 3, *plan.patch_size)


def test_a_budget_too_small_for_any_patch_is_refused():
    with pytest.raises(ValueError, match=r"plan.gpu_memory_gb=0.0001: even a \["):
        plan_network([1.0, 1.0, 1.0], [128, 128, 128], 1, 2, dataset_voxels=1e8,
                     gpu_memory_gb=0.0001)
