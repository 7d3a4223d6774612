"""Per-case preprocessing, and the way back onto the original grid for predictions.

The same `Preprocessor` runs on training data (once, then cached) and on every volume given to
`volseg predict`: its settings travel inside the checkpoint (`to_dict` / `from_dict`), as nnU-Net's
plans do (Isensee et al. 2021, Nat. Methods 18:203), so a prediction sees exactly what training
saw. The steps, in order (1, 2 and 5 only when configured):

1. reorient (``orientation``): axis permutation and flips only, no interpolation;
2. crop to the box of non-zero voxels (``crop_nonzero``), as nnU-Net does;
3. intensity normalisation (``intensity``);
4. resampling to ``spacing``, or in-plane resizing to ``fixed_size``;
5. centre padding or cropping of the slice axis to ``fixed_size``'s slice count.

`Preprocessor.trace` records what these steps do to one case's grid in a `Trace`;
`Preprocessor.restore` runs them backwards on class probabilities, so a prediction lands on
the input's exact voxels, and its shape, spacing, origin and direction are the input's.

Resampling keeps the volume's physical extent: with ``n`` voxels of size ``s`` resampled to
``n' = round(n * s / t)`` voxels for a target spacing ``t``, the new voxels have size
``s * n / n'`` (within half a voxel of ``t``) and the new grid spans the same box. This is
``torch.nn.functional.interpolate`` with ``align_corners=False`` (``grid_mode=True`` in
`scipy.ndimage.zoom`), and it is exactly invertible in shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from volseg.io import Volume

INTENSITY_SCHEMES = ("ct_window", "ct_percentile", "zscore", "none")
INTERPOLATIONS = ("linear", "bspline")
STATISTICS_KEYS = ("mean", "std", "lower", "upper")
# Relative spacing difference under which a volume is left on its own grid: resampling by
# less than this would only blur it.
SPACING_TOLERANCE = 0.01
# Orientation letters as the direction an array axis points towards (the DICOM convention that
# SimpleITK's DICOMOrient uses), in ITK's LPS world: +x is Left, +y Posterior, +z Superior.
AXIS_LETTERS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
_IDENTITY_PERMUTATION = (0, 1, 2)
_NO_FLIP = (False, False, False)


@dataclass(frozen=True)
class Trace:
    """What `Preprocessor` does to one case's grid: enough to put a prediction back on it.

    JSON-serialisable (`to_dict`), so the cache can keep it with the case.

    Attributes:
        shape: original spatial shape (x, y, z) in voxels.
        permutation: array axis ``i`` after reorientation is original axis ``permutation[i]``.
        flip: after the permutation, axis ``i`` is reversed where ``flip[i]``.
        crop: ``(start, stop)`` voxels per axis of the reoriented array, or ``None``.
        resampled_shape: shape after resampling (or in-plane resizing).
        lowres_axis: axis resampled with nearest neighbour (nnU-Net's "separate z"), or ``None``.
        slice_pad: voxels added before and after the last axis (both negative: removed).
    """

    shape: tuple[int, int, int]
    resampled_shape: tuple[int, int, int]
    permutation: tuple[int, int, int] = _IDENTITY_PERMUTATION
    flip: tuple[bool, bool, bool] = _NO_FLIP
    crop: tuple[tuple[int, int], ...] | None = None
    lowres_axis: int | None = None
    slice_pad: tuple[int, int] = (0, 0)

    @property
    def oriented_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[p] for p in self.permutation)

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        if self.crop is None:
            return self.oriented_shape
        return tuple(stop - start for start, stop in self.crop)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Spatial shape of the preprocessed arrays (voxels)."""
        x, y, z = self.resampled_shape
        return (x, y, z + sum(self.slice_pad))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Trace:
        crop = data.get("crop")
        return cls(
            shape=tuple(int(n) for n in data["shape"]),
            resampled_shape=tuple(int(n) for n in data["resampled_shape"]),
            permutation=tuple(int(p) for p in data.get("permutation", _IDENTITY_PERMUTATION)),
            flip=tuple(bool(f) for f in data.get("flip", _NO_FLIP)),
            crop=None if crop is None else tuple((int(a), int(b)) for a, b in crop),
            lowres_axis=data.get("lowres_axis"),
            slice_pad=tuple(int(p) for p in data.get("slice_pad", (0, 0))),
        )


@dataclass
class Preprocessor:
    """Reorient, crop, normalise, resample; settings stored in checkpoints.

    Args:
        spacing: target voxel spacing (x, y, z) in mm of the (reoriented) array axes; ``None``
            keeps each volume's own grid.
        intensity: ``"ct_window"`` clips to ``window`` (HU) and scales to [0, 1];
            ``"ct_percentile"`` is nnU-Net's CT scheme: clip to the dataset's foreground 0.5 and
            99.5 percentiles, then subtract the foreground mean and divide by its standard
            deviation (``statistics``, from the dataset fingerprint); ``"zscore"`` subtracts the
            mean and divides by the standard deviation per channel and case (over non-zero
            voxels when ``nonzero`` is true, the usual choice for skull-stripped MRI);
            ``"none"`` leaves values as read.
        window: (lower, upper) HU bounds for ``"ct_window"``.
        nonzero: restrict z-score statistics to non-zero voxels.
        orientation: three letters, e.g. ``"RAS"`` or ``"LPS"``, the direction each array axis
            is made to point towards (axis permutation and flips of the closest world axes; no
            interpolation); ``None`` keeps the file's axis order.
        crop_nonzero: crop to the bounding box of voxels that are non-zero in any channel, as
            nnU-Net does; predictions are padded back with background.
        image_interpolation: ``"linear"`` or ``"bspline"`` (cubic B-spline, nnU-Net's order 3
            for images). Labels always use nearest neighbour.
        anisotropy_threshold: when the coarsest spacing (before or after resampling) exceeds
            this many times the finest, resample in-plane with ``image_interpolation`` and along
            the coarse axis with nearest neighbour, nnU-Net's "separate z" (which uses 3.0);
            ``None`` never does.
        fixed_size: ``{"in_plane": [X, Y], "slices": Z}``: resize x and y to X x Y voxels, then
            centre-pad (or centre-crop) z to Z slices; excludes ``spacing``.
        statistics: ``{"mean", "std", "lower", "upper"}``, one value or one per channel, for
            ``"ct_percentile"``; see `volseg.data.fingerprint.with_dataset_statistics`.
    """

    spacing: Sequence[float] | None = None
    intensity: str = "ct_window"
    window: Sequence[float] = field(default=(-1000.0, 400.0))
    nonzero: bool = False
    orientation: str | None = None
    crop_nonzero: bool = False
    image_interpolation: str = "linear"
    anisotropy_threshold: float | None = None
    fixed_size: Mapping | None = None
    statistics: Mapping | None = None

    def __post_init__(self) -> None:
        _check_choice("intensity", self.intensity, INTENSITY_SCHEMES)
        _check_choice("image_interpolation", self.image_interpolation, INTERPOLATIONS)
        if self.spacing is not None:
            self.spacing = [float(s) for s in self.spacing]
            if len(self.spacing) != 3 or min(self.spacing) <= 0:
                raise ValueError(
                    f"data.spacing must be three positive numbers (x, y, z mm), got {self.spacing}"
                )
        self.window = [float(w) for w in self.window]
        if len(self.window) != 2 or self.window[0] >= self.window[1]:
            raise ValueError(
                f"data.preprocessing.window must be [lower, upper], got {self.window}"
            )
        for key in ("nonzero", "crop_nonzero"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"data.preprocessing.{key} must be true or false, got {getattr(self, key)!r}"
                )
        if self.orientation is not None:
            self.orientation = _check_orientation(self.orientation)
        if self.anisotropy_threshold is not None:
            threshold = self.anisotropy_threshold
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or (
                    threshold <= 1):
                raise ValueError(
                    "data.preprocessing.anisotropy_threshold must be a number above 1 (nnU-Net "
                    f"uses 3.0) or null, got {threshold!r}"
                )
            self.anisotropy_threshold = float(threshold)
        if self.fixed_size is not None:
            self.fixed_size = _check_fixed_size(self.fixed_size)
            if self.spacing is not None:
                raise ValueError(
                    "data.spacing and data.preprocessing.fixed_size exclude each other: set one "
                    "of them to null"
                )
        if self.statistics is not None:
            self.statistics = _check_statistics(self.statistics)

    @property
    def needs_statistics(self) -> bool:
        """``ct_percentile`` without ``statistics`` yet: see `with_dataset_statistics`."""
        return self.intensity == "ct_percentile" and self.statistics is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Preprocessor:
        return cls(**dict(data))

    # --- geometry -------------------------------------------------------------------------

    def trace(self, image: Volume) -> Trace:
        """What preprocessing does to ``image``'s grid (reads the voxels only to crop)."""
        shape = image.spatial_shape
        permutation, flip = _IDENTITY_PERMUTATION, _NO_FLIP
        if self.orientation is not None:
            permutation, flip = orientation_transform(image.direction, self.orientation)
        spacing = np.asarray(image.spacing)[list(permutation)]
        cropped = tuple(shape[p] for p in permutation)
        crop = None
        if self.crop_nonzero:
            box = nonzero_box(image.array)
            if box is not None:  # an all-zero image is kept whole: there is nothing to crop to
                crop = tuple(_reoriented_box(box[p], shape[p], f)
                             for p, f in zip(permutation, flip))
                cropped = tuple(stop - start for start, stop in crop)
        resampled = self._resampled_shape(cropped, spacing)
        lowres_axis = None
        if resampled != cropped and self.anisotropy_threshold is not None:
            new_spacing = spacing * np.asarray(cropped) / np.asarray(resampled)
            lowres_axis = lowres_axis_of(spacing, new_spacing, self.anisotropy_threshold)
        slice_pad = (0, 0)
        if self.fixed_size is not None:
            missing = self.fixed_size["slices"] - resampled[2]
            before = int(missing / 2)  # towards zero: the odd voxel goes after, padding or not
            slice_pad = (before, missing - before)
        return Trace(shape=shape, resampled_shape=resampled, permutation=permutation, flip=flip,
                     crop=crop, lowres_axis=lowres_axis, slice_pad=slice_pad)

    def _resampled_shape(
        self, shape: tuple[int, int, int], spacing: np.ndarray
    ) -> tuple[int, int, int]:
        if self.fixed_size is not None:
            return (*self.fixed_size["in_plane"], shape[2])
        if self.spacing is None or _same_spacing(spacing, self.spacing):
            return shape
        return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, self.spacing))

    def target_shape(self, volume: Volume) -> tuple[int, int, int]:
        """Spatial shape of ``volume`` after preprocessing (voxels)."""
        return self.trace(volume).output_shape

    # --- images and labels ----------------------------------------------------------------

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Intensity normalisation of a ``(C, x, y, z)`` image, float32."""
        image = image.astype(np.float32, order="C", copy=True)
        if self.intensity == "ct_window":
            lower, upper = self.window
            np.clip(image, lower, upper, out=image)
            image -= lower
            image /= upper - lower
        elif self.intensity == "ct_percentile":
            # nnU-Net's CTNormalization: one clip range and z-score for the whole dataset, from
            # foreground voxels, so HU keep their meaning across cases.
            for channel, (mean, std, lower, upper) in zip(image, self._channel_statistics(image)):
                np.clip(channel, lower, upper, out=channel)
                channel -= mean
                channel /= max(std, 1e-8)
        elif self.intensity == "zscore":
            for channel in image:
                values = channel[channel != 0] if self.nonzero else channel
                if values.size == 0:
                    continue
                mean, std = float(values.mean()), float(values.std())
                channel -= mean
                channel /= max(std, 1e-8)
        return image

    def _channel_statistics(self, image: np.ndarray) -> list[tuple[float, ...]]:
        if self.statistics is None:
            raise ValueError(
                "data.preprocessing.intensity=ct_percentile needs the dataset's foreground "
                "statistics (data.preprocessing.statistics): run `volseg plan "
                "data=<name>` and pass the statistics it prints, or let the data module compute "
                "them from the dataset fingerprint (volseg.data.fingerprint)"
            )
        columns = [self.statistics[key] for key in STATISTICS_KEYS]
        if len(columns[0]) == 1:
            return [tuple(c[0] for c in columns)] * len(image)
        if len(columns[0]) != len(image):
            raise ValueError(
                f"data.preprocessing.statistics has {len(columns[0])} channels, the image "
                f"{len(image)}"
            )
        return list(zip(*columns))

    def image(self, volume: Volume, trace: Trace | None = None) -> Volume:
        """Preprocess a ``(C, x, y, z)`` (or 3D) image; float32 on the preprocessed grid."""
        trace = self.trace(volume) if trace is None else _checked(trace, volume)
        array = volume.array if volume.array.ndim == 4 else volume.array[None]
        array = self.normalize(_reorient_and_crop(array, trace))
        shape = trace.resampled_shape
        if self.image_interpolation == "bspline":
            array = _bspline(array, shape, trace.lowres_axis)
        else:
            array = _interpolate(torch.from_numpy(array), shape, trace.lowres_axis).numpy()
        # Zero after normalisation, as nnU-Net pads: air for a CT window, the mean for z-scores.
        array = _pad_slices(array, trace.slice_pad)
        return _on_grid(array, volume, trace)

    def label(self, volume: Volume, trace: Trace | None = None) -> Volume:
        """Preprocess a label map with nearest neighbour (half-voxel-correct ``nearest-exact``).

        Args:
            trace: the image's `Trace`; required with ``crop_nonzero``, where the image's
                voxels decide the box.
        """
        if trace is None:
            if self.crop_nonzero:
                raise ValueError(
                    "data.preprocessing.crop_nonzero: the label needs the image's trace: "
                    "label(label, trace=preprocessor.trace(image))"
                )
            trace = self.trace(volume)
        array = _reorient_and_crop(volume.array, _checked(trace, volume))
        if trace.resampled_shape != array.shape:
            tensor = torch.from_numpy(array.astype(np.float32))[None, None]
            array = F.interpolate(tensor, size=trace.resampled_shape, mode="nearest-exact")[0, 0]
            array = array.numpy()
        array = _pad_slices(array.astype(np.uint8), trace.slice_pad)
        return _on_grid(array, volume, trace)

    @staticmethod
    def restore(
        probabilities: torch.Tensor, target: Trace | Mapping | Sequence[int]
    ) -> torch.Tensor:
        """Map ``(K, x', y', z')`` class probabilities back onto the original grid.

        Every step of the `Trace` is undone in reverse: removed slices come back as background
        (probability 1 for class 0), probabilities are resampled back (linear; nearest along
        ``lowres_axis``, as nnU-Net exports them), the crop is padded with background, and the
        reorientation is undone. Probabilities (not labels) are interpolated, then the caller
        takes the argmax, so boundaries land between original voxels as smoothly as the
        network saw them.

        Args:
            target: the case's `Trace` (or its `Trace.to_dict`); a plain original shape
                (x, y, z) only resamples, which is right without reorientation, cropping and
                ``fixed_size``.
        """
        trace = _as_trace(target, probabilities.shape[-3:])
        if tuple(probabilities.shape[-3:]) != trace.output_shape:
            raise ValueError(
                f"probabilities of shape {tuple(probabilities.shape[-3:])} do not fit the "
                f"preprocessed grid {trace.output_shape}"
            )
        before, after = trace.slice_pad
        if before >= 0 and after >= 0:
            probabilities = probabilities[..., before:probabilities.shape[-1] - after]
        else:
            probabilities = _pad_background(probabilities, [(0, 0), (0, 0), (-before, -after)])
        probabilities = _interpolate(probabilities, trace.cropped_shape, trace.lowres_axis)
        if trace.crop is not None:
            probabilities = _pad_background(probabilities, [
                (start, n - stop) for (start, stop), n in zip(trace.crop, trace.oriented_shape)
            ])
        flipped = [1 + i for i, f in enumerate(trace.flip) if f]
        if flipped:
            probabilities = probabilities.flip(flipped)
        inverse = [trace.permutation.index(axis) for axis in range(3)]
        return probabilities.permute(0, *(1 + i for i in inverse))


def class_argmax(probabilities: torch.Tensor, slab: int = 16) -> torch.Tensor:
    """uint8 ``argmax`` over the classes of ``(K, x, y, z)``, slab by slab along x.

    A whole-volume ``argmax`` returns int64, 8 bytes per voxel (840 MB for a 512x512x400 CT)
    before the cast; slabs keep that to a few slices.
    """
    labels = torch.empty(probabilities.shape[1:], dtype=torch.uint8, device=probabilities.device)
    for start in range(0, labels.shape[0], slab):
        labels[start:start + slab] = probabilities[:, start:start + slab].argmax(0)
    return labels


# --- orientation and cropping ------------------------------------------------------------------


def orientation_code(direction: Sequence[float]) -> str:
    """The three letters of the world directions that the array axes point closest to."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    world = _closest_world_axes(matrix)
    letters = {value: letter for letter, value in AXIS_LETTERS.items()}
    return "".join(letters[(w, int(np.sign(matrix[w, j])))] for j, w in enumerate(world))


def orientation_transform(
    direction: Sequence[float], code: str
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Axis permutation and flips that make the array axes point along ``code``.

    Returns:
        ``(permutation, flip)``: new axis ``i`` is old axis ``permutation[i]``, reversed where
        ``flip[i]``.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    world = _closest_world_axes(matrix)
    targets = [AXIS_LETTERS[letter] for letter in code]
    permutation = tuple(world.index(axis) for axis, _ in targets)
    flip = tuple(
        bool(np.sign(matrix[axis, old]) != sign)
        for old, (axis, sign) in zip(permutation, targets)
    )
    return permutation, flip


def _closest_world_axes(matrix: np.ndarray) -> tuple[int, int, int]:
    """World axis of each array axis: the one-to-one assignment with the largest |cosines|.

    Taken jointly, not axis by axis, so two oblique axes never both claim the same world axis.
    """
    return max(itertools.permutations(range(3)),
               key=lambda world: sum(abs(matrix[w, j]) for j, w in enumerate(world)))


def nonzero_box(array: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``(start, stop)`` per spatial axis of the voxels non-zero in any channel, or ``None``.

    ``array`` is ``(x, y, z)`` or ``(C, x, y, z)``; nnU-Net's crop_to_nonzero uses the same box.
    """
    mask = array != 0
    if mask.ndim == 4:
        mask = mask.any(0)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _reoriented_box(box: tuple[int, int], size: int, flip: bool) -> tuple[int, int]:
    start, stop = box
    return (size - stop, size - start) if flip else (start, stop)


def _reorient_and_crop(array: np.ndarray, trace: Trace) -> np.ndarray:
    """Steps 1 and 2 on the last three axes of ``array`` (views, no copy)."""
    lead = array.ndim - 3
    array = array.transpose(*range(lead), *(lead + p for p in trace.permutation))
    flipped = tuple(lead + i for i, f in enumerate(trace.flip) if f)
    if flipped:
        array = np.flip(array, flipped)
    if trace.crop is not None:
        array = array[(Ellipsis, *(slice(a, b) for a, b in trace.crop))]
    return array


def _on_grid(array: np.ndarray, volume: Volume, trace: Trace) -> Volume:
    """``array`` with the geometry that places the preprocessed grid where it belongs."""
    spacing = np.asarray(volume.spacing, dtype=float)
    direction = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    permutation = list(trace.permutation)
    # 1. Reorient: the new first voxel is the old corner the flips start from.
    corner = np.zeros(3)
    for new, old in enumerate(permutation):
        corner[old] = trace.shape[old] - 1 if trace.flip[new] else 0
    origin = np.asarray(volume.origin) + direction @ (spacing * corner)
    signs = np.where(trace.flip, -1.0, 1.0)
    direction = direction[:, permutation] * signs
    spacing = spacing[permutation]
    # 2. Crop: the origin moves to the box's first voxel.
    if trace.crop is not None:
        origin = origin + direction @ (spacing * [start for start, _ in trace.crop])
    # 3. Resample: same box, the first new voxel centre half a new voxel in from its corner.
    new_spacing = spacing * np.asarray(trace.cropped_shape) / np.asarray(trace.resampled_shape)
    origin = origin + direction @ ((new_spacing - spacing) / 2)
    # 4. Slices padded before the first one move the origin back along z.
    origin = origin - direction[:, 2] * new_spacing[2] * trace.slice_pad[0]
    return Volume(np.ascontiguousarray(array), new_spacing, origin, direction.ravel())


# --- resampling --------------------------------------------------------------------------------


def lowres_axis_of(
    spacing: Sequence[float], new_spacing: Sequence[float], threshold: float
) -> int | None:
    """The axis nnU-Net resamples with nearest neighbour ("separate z"), or ``None``.

    As nnU-Net's ``resample_data_or_seg``: the coarsest axis of the current spacing when it is
    more than ``threshold`` times the finest, else of the new spacing; ``None`` when neither
    is that anisotropic or two axes share the coarsest spacing (e.g. 0.24 x 1.25 x 1.25 mm).
    """
    for candidate in (np.asarray(spacing, float), np.asarray(new_spacing, float)):
        if candidate.max() / candidate.min() > threshold:
            coarsest = np.flatnonzero(np.isclose(candidate, candidate.max(), rtol=1e-3))
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def _nearest_indices(size: int, new_size: int) -> np.ndarray:
    """Source voxel of each new voxel: the centre-aligned rule of torch's ``nearest-exact``."""
    return np.minimum(((np.arange(new_size) + 0.5) * size / new_size).astype(int), size - 1)


def _interpolate(
    tensor: torch.Tensor, shape: Sequence[int], lowres_axis: int | None
) -> torch.Tensor:
    """Linear resampling of ``(C, x, y, z)`` to ``shape``; nearest along ``lowres_axis``."""
    shape = tuple(int(s) for s in shape)
    if tuple(tensor.shape[1:]) == shape:
        return tensor
    if lowres_axis is None:
        return F.interpolate(tensor[None], size=shape, mode="trilinear", align_corners=False)[0]
    # In-plane: each slice across the coarse axis is one bilinear 2D problem.
    in_plane = [s for axis, s in enumerate(shape) if axis != lowres_axis]
    slices = tensor.movedim(1 + lowres_axis, 0)
    slices = F.interpolate(slices, size=in_plane, mode="bilinear", align_corners=False)
    tensor = slices.movedim(0, 1 + lowres_axis)
    index = _nearest_indices(tensor.shape[1 + lowres_axis], shape[lowres_axis])
    return tensor.index_select(1 + lowres_axis, torch.from_numpy(index).to(tensor.device))


def _bspline(array: np.ndarray, shape: Sequence[int], lowres_axis: int | None) -> np.ndarray:
    """Cubic B-spline resampling of ``(C, x, y, z)`` to ``shape``; nearest along ``lowres_axis``.

    ``grid_mode=True`` is the half-voxel convention of the linear path. Mirror boundaries are
    ITK's (SimpleITK's ``sitkBSpline`` gives the same values); nnU-Net's skimage ``resize``
    repeats the edge instead, which differs only within a few voxels of the border.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape[1:]) == shape:
        return array
    spline_shape = list(shape)
    if lowres_axis is not None:
        spline_shape[lowres_axis] = array.shape[1 + lowres_axis]
    zoom = [new / old for new, old in zip(spline_shape, array.shape[1:])]
    array = np.stack([
        ndimage.zoom(channel, zoom, order=3, mode="mirror", grid_mode=True)
        for channel in array
    ]).astype(np.float32, copy=False)
    if lowres_axis is not None:
        index = _nearest_indices(array.shape[1 + lowres_axis], shape[lowres_axis])
        array = np.take(array, index, axis=1 + lowres_axis)
    return array


def _pad_slices(array: np.ndarray, slice_pad: tuple[int, int]) -> np.ndarray:
    """Zero-pad (positive) or crop (negative) the last axis by ``(before, after)`` voxels."""
    before, after = slice_pad
    if before >= 0 and after >= 0:
        widths = [(0, 0)] * (array.ndim - 1) + [(before, after)]
        return np.pad(array, widths) if before or after else array
    return array[..., -before:array.shape[-1] + after]


def _pad_background(probabilities: torch.Tensor, widths: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Pad ``(K, x, y, z)`` probabilities by ``(before, after)`` voxels per axis with class 0."""
    shape = [n + a + b for n, (a, b) in zip(probabilities.shape[1:], widths)]
    padded = probabilities.new_zeros((probabilities.shape[0], *shape))
    padded[0] = 1
    inside = tuple(slice(a, a + n) for n, (a, _) in zip(probabilities.shape[1:], widths))
    padded[(slice(None), *inside)] = probabilities
    return padded


# --- settings ----------------------------------------------------------------------------------


def _check_choice(key: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"data.preprocessing.{key} must be one of {allowed}, got {value!r}")


def _check_orientation(code: object) -> str:
    code = str(code).upper()
    axes = sorted(AXIS_LETTERS[letter][0] for letter in code if letter in AXIS_LETTERS)
    if len(code) != 3 or axes != [0, 1, 2]:
        raise ValueError(
            "data.preprocessing.orientation must be three letters naming each world axis once, "
            f"one of L/R, P/A, S/I each (e.g. RAS or LPS), or null; got {code!r}"
        )
    return code


def _check_fixed_size(value: Mapping) -> dict:
    message = ("data.preprocessing.fixed_size must be {in_plane: [X, Y], slices: Z} with "
               f"positive voxel counts, or null; got {value!r}")
    if not isinstance(value, Mapping) or set(value) != {"in_plane", "slices"}:
        raise ValueError(message)
    try:
        in_plane = [int(n) for n in value["in_plane"]]
        slices = int(value["slices"])
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(in_plane) != 2 or min(*in_plane, slices) < 1:
        raise ValueError(message)
    return {"in_plane": in_plane, "slices": slices}


def _check_statistics(value: Mapping) -> dict:
    if not isinstance(value, Mapping) or set(value) != set(STATISTICS_KEYS):
        raise ValueError(
            f"data.preprocessing.statistics must have exactly the keys {STATISTICS_KEYS}, "
            f"got {value!r}"
        )
    columns = {}
    try:
        for key in STATISTICS_KEYS:
            entry = value[key]
            columns[key] = [float(v) for v in ([entry] if np.isscalar(entry) else entry)]
    except (TypeError, ValueError):
        raise ValueError(
            f"data.preprocessing.statistics values must be numbers, got {value!r}"
        ) from None
    lengths = {len(column) for column in columns.values()}
    if len(lengths) != 1 or 0 in lengths or not np.isfinite(list(columns.values())).all():
        raise ValueError(
            "data.preprocessing.statistics needs finite values, one per channel for every key, "
            f"got {columns}"
        )
    if min(columns["std"]) < 0 or any(
            lo >= hi for lo, hi in zip(columns["lower"], columns["upper"])):
        raise ValueError(
            f"data.preprocessing.statistics needs std >= 0 and lower < upper, got {columns}"
        )
    return columns


def _as_trace(target: Trace | Mapping | Sequence[int], current: Sequence[int]) -> Trace:
    if isinstance(target, Trace):
        return target
    if isinstance(target, Mapping):
        return Trace.from_dict(target)
    return Trace(shape=tuple(int(s) for s in target), resampled_shape=tuple(current))


def _checked(trace: Trace, volume: Volume) -> Trace:
    if tuple(trace.shape) != volume.spatial_shape:
        raise ValueError(
            f"trace of a {tuple(trace.shape)} volume given for one of {volume.spatial_shape}"
        )
    return trace


def _same_spacing(spacing: Sequence[float], target: Sequence[float]) -> bool:
    return all(abs(s - t) <= SPACING_TOLERANCE * t for s, t in zip(spacing, target))

