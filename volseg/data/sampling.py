"""Training patches cut from cached volumes: where to centre them, and the cut itself.

Only the patch is ever touched: the cached arrays are memory-mapped, and a patch reads just its
own slab of them (for a rotated or deformed patch, the bounding box of its source region).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from volseg.data.augment import Augmentation, control_offsets, crop, resample_patch

__all__ = ["PatchSampler", "crop"]


class PatchSampler:
    """Chooses patch centres, uniformly or on foreground, and cuts augmented patches.

    Args:
        patch_size: patch shape (x, y, z) in voxels.
        foreground_fraction: probability that a patch holds a chosen foreground voxel (nnU-Net
            uses 0.33); the class is drawn uniformly among the classes present in the case,
            so a small lesion is seen as often as a large organ.
        foreground_position: where that voxel lands in the patch: ``centre`` (nnU-Net, MONAI's
            ``RandCropByPosNegLabel``) or ``anywhere`` (uniformly over the patch, so
            foreground patches hold as much of their organ as sliding-window tiles do).
        flip_prob: probability of mirroring the patch along each axis independently (used
            when ``augmentation`` is ``None``; otherwise its ``spatial.flip_prob`` applies).
        augmentation: spatial and intensity augmentation (`volseg.data.augment`); ``None``
            mirrors only.
        label_fill: label of voxels outside the volume (``ignore_index`` with sparse labels).
    """

    def __init__(
        self, patch_size: Sequence[int], foreground_fraction: float = 0.33, flip_prob: float = 0.5,
        augmentation: Augmentation | None = None, label_fill: int = 0,
        foreground_position: str = "centre",
    ) -> None:
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"data.patch_size must be three positive ints, got {patch_size}")
        if not 0 <= foreground_fraction <= 1:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if foreground_position not in ("centre", "anywhere"):
            raise ValueError("data.foreground_position must be centre or anywhere, got "
                             f"{foreground_position!r}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.foreground_fraction = foreground_fraction
        self.augmentation = augmentation or Augmentation.from_config(None, flip_prob)
        self.label_fill = int(label_fill)
        self.foreground_position = foreground_position

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
            elif self.foreground_position == "anywhere":  # any corner that keeps the voxel in
                low, high = max(0, centre[axis] - patch + 1), min(size - patch, centre[axis])
                start.append(int(rng.integers(low, high + 1)))
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
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``(C, *patch)`` image patch and its ``(*patch)`` label patch.

        ``annotate(label_patch, start)``, if given, rewrites the label on the volume's grid
        before mirroring and any other spatial transform, e.g.
        `volseg.data.sparse.SparseAnnotation.apply` to keep only annotated slices.
        ``spacing`` (mm) makes rotations and scaling physical on anisotropic voxels.
        """
        start = self.start(label.shape, locations, rng)
        params = self.augmentation.spatial.draw(rng, self.patch_size)
        if params.resamples:
            centre = [s + (p - 1) / 2 for s, p in zip(start, self.patch_size)]
            control = control_offsets(params, self.patch_size, spacing)
            image_t, label_t = resample_patch(image, label, centre, control, self.patch_size,
                                              self.label_fill, annotate)
            image_patch, label_patch = image_t.numpy(), label_t.numpy()
        else:  # mirroring alone needs no interpolation: a plain crop is exact and faster
            image_patch = crop(image, start, self.patch_size)
            label_patch = crop(label, start, self.patch_size, fill=self.label_fill)
            if annotate is not None:
                label_patch = annotate(label_patch, start)
            flips = [axis for axis, flip in enumerate(params.flips) if flip]
            if flips:
                image_patch = np.flip(image_patch, axis=[a + 1 for a in flips])
                label_patch = np.flip(label_patch, axis=flips)
        image_patch = np.ascontiguousarray(image_patch, dtype=np.float32)
        augmented = self.augmentation.intensity(torch.from_numpy(image_patch), rng)
        return augmented.numpy(), np.ascontiguousarray(label_patch)
