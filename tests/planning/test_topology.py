"""nnU-Net's topology rule, against plans worked by hand from the rule in nnU-Net's paper."""

import pytest

from volseg.planning.topology import level_features, plan_topology


def test_isotropic_patch_pools_every_axis_down_to_four_voxels():
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five poolings, six levels.
    topology = plan_topology([1.0, 1.0, 1.0], [128, 128, 128])
    assert topology.strides == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert topology.kernel_sizes == [[3, 3, 3]] * 6
    assert topology.patch_size == [128, 128, 128] and topology.divisors == [32, 32, 32]


def test_thick_slices_pool_in_plane_first():
    """Prostate MRI, 0.625 x 0.625 x 3.6 mm, patch 256 x 320 x 20, worked by hand:
    z pools once x and y reach 2.5 mm (3.6 / 2.5 < 2) and stops at 5 slices (< 8);
    its kernel is 1 until then."""
    topology = plan_topology([0.625, 0.625, 3.6], [256, 320, 20])
    assert topology.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2],
                                [2, 2, 1], [2, 2, 1]]
    assert topology.kernel_sizes == [[3, 3, 1], [3, 3, 1]] + [[3, 3, 3]] * 5
    assert topology.divisors == [64, 64, 4]
    assert topology.patch_size == [256, 320, 20]


def test_one_axis_alone_needs_three_minimum_feature_maps():
    # Only x is fine enough to pool; at 10 voxels (< 3 x 4) it stops, leaving one level.
    assert plan_topology([1.0, 4.0, 4.0], [10, 64, 64]).strides == [[1, 1, 1]]
    assert plan_topology([1.0, 4.0, 4.0], [12, 64, 64]).strides[1] == [2, 1, 1]


def test_patch_is_rounded_up_to_the_divisors():
    topology = plan_topology([1.0, 1.0, 1.0], [100, 50, 36])
    assert all(p % d == 0 for p, d in zip(topology.patch_size, topology.divisors))
    assert [p >= q for p, q in zip(topology.patch_size, [100, 50, 36])] == [True] * 3
    assert topology.levels == len(topology.kernel_sizes)


def test_max_levels():
    assert plan_topology([1.0, 1.0, 1.0], [128, 128, 128], max_levels=3).levels == 3


def test_features_double_up_to_the_cap():
    assert level_features(7) == [32, 64, 128, 256, 320, 320, 320]
    assert level_features(3, base=4, maximum=10) == [4, 8, 10]


@pytest.mark.parametrize("spacing, patch, match", [
    ([1.0, 0.0, 1.0], [8, 8, 8], "spacing"),
    ([1.0, 1.0], [8, 8, 8], "spacing"),
    ([1.0, 1.0, 1.0], [8, 0, 8], "patch_size"),
])
def test_bad_arguments(spacing, patch, match):
    with pytest.raises(ValueError, match=match):
        plan_topology(spacing, patch)
