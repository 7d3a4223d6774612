"""Training patches cut from cached volumes: where to centre them, and the cut itself.

Only the patch is ever touched: the cached arrays are memory-mapped, and a patch reads just its
own slab of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


class PatchSampler:
    """Chooses patch centres, uniformly or on foreground, and cuts (padded) patches.

    Args:
        patch_size: patch shape (x, y, z) in voxels.
        foreground_fraction: probability that a patch is centred on a foreground voxel (nnU-Net
            uses 0.33); the class is drawn uniformly among the classes present in the case,
            so a small lesion is seen as often as a large organ.
        flip_prob: probability of mirroring the patch along each axis independently.
    """

    def __init__(
        self, patch_size: Sequence[int], foreground_fraction: float = 0.33, flip_prob: float = 0.5
    ) -> None:
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"data.patch_size must be three positive ints, got {patch_size}")
        if not 0 <= foreground_fraction <= 1:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.foreground_fraction = foreground_fraction
        self.flip_prob = flip_prob

    def start(
        self,
        shape: Sequence[int],
        locations: Mapping[int, np.ndarray],
        rng: np.random.Generator,
    ) -> tuple[int, ...]:
        """Corner of the next patch (may be negative when the volume is smaller than it)."""
        centre = None
        if locations and rng.random() < self.foreground_fraction:
            cls = list(locations)[rng.integers(len(locations))]
            flat = locations[cls][rng.integers(len(locations[cls]))]
            centre = np.unravel_index(flat, tuple(shape))
        start = []
        for axis, (size, patch) in enumerate(zip(shape, self.patch_size)):
            if size <= patch:  # smaller than the patch: centre it, pad around
                start.append(-((patch - size) // 2))
            elif centre is None:
                start.append(int(rng.integers(0, size - patch + 1)))
            else:  # keep the chosen voxel inside while staying inside the volume
                start.append(int(np.clip(centre[axis] - patch // 2, 0, size - patch)))
        return tuple(start)

    def sample(
        self,
        image: np.ndarray,
        label: np.ndarray,
        locations: Mapping[int, np.ndarray],
        rng: np.random.Generator,
        annotate: Callable[[np.ndarray, Sequence[int]], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``(C, *patch)`` image patch and its ``(*patch)`` label patch.

        ``annotate(label_patch, start)``, if given, rewrites the label patch before mirroring,
        e.g. `volseg.data.sparse.SparseAnnotation.apply` to keep only annotated slices.
        """
        start = self.start(label.shape, locations, rng)
        image_patch = crop(image, start, self.patch_size)
        label_patch = crop(label, start, self.patch_size)
        if annotate is not None:
            label_patch = annotate(label_patch, start)
        flips = [axis for axis in range(3) if rng.random() < self.flip_prob]
        if flips:
            image_patch = np.flip(image_patch, axis=[a + 1 for a in flips])
            label_patch = np.flip(label_patch, axis=flips)
        return np.ascontiguousarray(image_patch), np.ascontiguousarray(label_patch)


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Cut ``size`` voxels from ``start`` out of the last three axes, zero-padding outside.

    Reads only the overlapping slab of ``array`` (cheap on memory-mapped arrays).
    """
    lead = array.shape[:-3]
    out = np.zeros((*lead, *size), dtype=array.dtype)
    src, dst = [], []
    for begin, length, extent in zip(start, size, array.shape[-3:]):
        lo, hi = max(begin, 0), min(begin + length, extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out[(..., *dst)] = array[(..., *src)]
    return out
