"""Sparse annotation (Çiçek et al. 2016): only a few slices per axis carry labels.

The 3D U-Net paper trains from volumes in which annotators labelled a handful of orthogonal
slices (Section 2, Fig. 1); every other voxel is "unlabelled" and weighs zero in the loss.
`SparseAnnotation` simulates that on any densely labelled dataset: per case it picks
``slices_per_axis[a]`` evenly spaced slices along each axis ``a`` (with a seeded random offset, so
cases differ), and a label voxel counts as annotated when it lies on at least one picked slice.
Every other voxel becomes ``ignore_index``, which all volseg losses leave out.

Validation and test labels stay dense: the simulation applies to training patches only, so
metrics measure the dense segmentation the paper evaluates.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


class SparseAnnotation:
    """Which slices of a case are "annotated", and masking of everything else.

    Args:
        slices_per_axis: annotated slices along x, y and z (one int for all three); 0 leaves
            an axis without annotated slices.
        ignore_index: label given to unannotated voxels (must match the loss's).
        seed: picks each case's slice offsets, together with the case id.
    """

    def __init__(
        self, slices_per_axis: int | Sequence[int], ignore_index: int = 255, seed: int = 0
    ) -> None:
        counts = (
            [int(slices_per_axis)] * 3
            if np.isscalar(slices_per_axis)
            else [int(k) for k in slices_per_axis]
        )
        if len(counts) != 3 or min(counts) < 0 or sum(counts) == 0:
            raise ValueError(
                "data.sparse_annotation.slices_per_axis must be one int or three ints >= 0, "
                f"not all 0; got {slices_per_axis}"
            )
        self.slices_per_axis = counts
        self.ignore_index = int(ignore_index)
        self.seed = int(seed)

    def slices(self, case_id: str, shape: Sequence[int]) -> list[np.ndarray]:
        """The annotated slice indices along each axis of a case with spatial ``shape``."""
        # crc32, not hash(): Python salts str hashes per process, and every loader worker
        # must pick the same slices.
        rng = np.random.default_rng([self.seed, zlib.crc32(case_id.encode())])
        picked = []
        for count, size in zip(self.slices_per_axis, shape, strict=True):
            count = min(count, size)
            if count == 0:
                picked.append(np.zeros(0, dtype=np.int64))
                continue
            step = size / count
            offset = rng.uniform(0, step)
            picked.append(np.floor(offset + step * np.arange(count)).astype(np.int64))
        return picked

    def mask(
        self, case_id: str, shape: Sequence[int], start: Sequence[int], size: Sequence[int]
    ) -> np.ndarray:
        """Boolean ``size`` mask, True where the patch at ``start`` lies on an annotated slice.

        Voxels outside the volume (a patch may overhang it) are never annotated.
        """
        on_slice = np.zeros(tuple(size), dtype=bool)
        inside = np.ones(tuple(size), dtype=bool)
        for axis, picked in enumerate(self.slices(case_id, shape)):
            positions = np.arange(start[axis], start[axis] + size[axis])
            view = [1, 1, 1]
            view[axis] = -1
            on_slice |= np.isin(positions, picked).reshape(view)
            inside &= ((positions >= 0) & (positions < shape[axis])).reshape(view)
        return on_slice & inside

    def apply(
        self, label: np.ndarray, case_id: str, shape: Sequence[int], start: Sequence[int]
    ) -> np.ndarray:
        """``label`` (a patch cut at ``start`` from a case of ``shape``) with unannotated
        voxels set to ``ignore_index``; a whole volume is the patch at ``start = (0, 0, 0)``."""
        annotated = self.mask(case_id, shape, start, label.shape)
        return np.where(annotated, label, np.asarray(self.ignore_index, dtype=label.dtype))
