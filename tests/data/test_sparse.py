"""Simulated sparse annotation: which slices are kept, patch masks, and the patch dataset."""

import numpy as np
import pytest

from volseg.data.sampling import PatchSampler
from volseg.data.sparse import SparseAnnotation


def test_slices_are_evenly_spaced_and_per_case_deterministic() -> None:
    sparse = SparseAnnotation([2, 0, 3], seed=4)
    x, y, z = sparse.slices("case_a", (40, 30, 12))
    assert len(x) == 2 and len(y) == 0 and len(z) == 3
    # Even spacing: consecutive picks are size / count apart (rounded down to a voxel).
    assert set(np.diff(x)) <= {19, 20, 21} and set(np.diff(z)) <= {3, 4, 5}
    assert x.min() >= 0 and x.max() < 40 and z.max() < 12
    assert all(np.array_equal(a, b) for a, b in zip(
        sparse.slices("case_a", (40, 30, 12)), [x, y, z]))
    other = sparse.slices("case_b", (40, 30, 12))
    assert not (np.array_equal(other[0], x) and np.array_equal(other[2], z))


def test_whole_volume_keeps_exactly_the_annotated_slices() -> None:
    shape = (9, 8, 7)
    label = np.random.default_rng(0).integers(0, 3, shape)
    sparse = SparseAnnotation([1, 1, 0], ignore_index=255, seed=1)
    out = sparse.apply(label, "c", shape, (0, 0, 0))
    (xs,), (ys,), _ = sparse.slices("c", shape)
    # Worked by hand: a voxel is kept iff it lies on plane x = xs or plane y = ys.
    expected = np.full(shape, 255)
    expected[xs] = label[xs]
    expected[:, ys] = label[:, ys]
    np.testing.assert_array_equal(out, expected)
    kept = (out != 255).sum()
    assert kept == 8 * 7 + 9 * 7 - 7  # two planes minus their shared line


def test_patch_mask_matches_the_whole_volume_mask_and_overhang_is_ignored() -> None:
    shape = (12, 10, 8)
    sparse = SparseAnnotation(2, ignore_index=9, seed=0)
    full = sparse.mask("c", shape, (0, 0, 0), shape)
    start, size = (-2, 3, 4), (6, 5, 6)  # overhangs x below 0 and z above 8
    patch = sparse.mask("c", shape, start, size)
    assert not patch[:2].any() and not patch[:, :, 4:].any()
    np.testing.assert_array_equal(patch[2:, :, :4], full[0:4, 3:8, 4:8])


def test_sampler_applies_annotation_before_mirroring() -> None:
    shape = (16, 16, 16)
    image = np.zeros((1, *shape), np.float32)
    label = np.ones(shape, np.uint8)
    sparse = SparseAnnotation([0, 0, 1], ignore_index=255, seed=3)
    (z,) = sparse.slices("c", shape)[2]
    sampler = PatchSampler((16, 16, 16), foreground_fraction=0.0, flip_prob=1.0)

    def annotate(patch, start):
        return sparse.apply(patch.astype(np.int64), "c", shape, start)

    _, patch = sampler.sample(image, label, {}, np.random.default_rng(0), annotate)
    # One annotated z plane, mirrored along z with the rest of the patch.
    assert set(np.unique(patch)) == {1, 255}
    assert np.flatnonzero((patch == 1).all(axis=(0, 1))).tolist() == [15 - z]


@pytest.mark.parametrize("bad", [0, [1, 2], [-1, 1, 1], [0, 0, 0]])
def test_bad_slice_counts_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="slices_per_axis"):
        SparseAnnotation(bad)
