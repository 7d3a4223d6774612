"""The built-in synthetic CT dataset, and the writer that every built-in phantom shares.

The CT phantom is an organ with hypodense lesions, in Hounsfield units. Each case is a small
abdomen-like CT: air around an elliptic body with a subcutaneous fat rim, a spine posterior to a
smoothly deformed ellipsoidal organ (label 1) that holds one to three darker lesions (label 2),
blurred and noisy like a reconstructed scan. Spacing is anisotropic and varies per case, and the
origin is non-zero, so every geometry code path gets exercised.

A phantom is described by a `Phantom` (its labels, channels and case function);
`generate_phantom_dataset` writes any of them in the nnU-Net v2 raw layout
(``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, ``dataset.json``), so it is read
by the same adapter as real data. `volseg.data.synthetic_mri` is the second phantom.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from volseg.io import IDENTITY_DIRECTION, Volume, write_volume
from volseg.io.atomic import write_json

# Bump whenever the generated content changes: a dataset written by another version is rebuilt.
GENERATOR_VERSION = 1
DEFAULT_SIZE_MM = (160.0, 160.0, 120.0)
# The anatomy below is specified in mm for the default field of view and scaled with it.
_REFERENCE_SIZE_MM = np.array(DEFAULT_SIZE_MM)
_MIN_SIZE_MM = 48.0
LABELS = {"background": 0, "organ": 1, "lesion": 2}
CASE_PREFIX = "synth"
FILE_ENDING = ".nii.gz"
_PARAMS_KEY = "volseg_synthetic"
_Contrast = TypeVar("_Contrast")


@dataclass(frozen=True)
class Phantom:
    """A generated dataset, as `generate_phantom_dataset` writes it.

    Attributes:
        name: short name, as ``SyntheticLayout(phantom=...)`` takes it (``"ct"``, ``"mri"``).
        title: ``dataset.json``'s ``"name"``.
        description: ``dataset.json``'s ``"description"``.
        case_prefix: case identifiers are ``<case_prefix>_000``, ``<case_prefix>_001``, ...
        labels: label name to value, background first.
        channel_names: one name per image channel, in file order (``_0000``, ``_0001``, ...).
        case: ``case(seed, index, size_mm)`` gives ``(channels, label)``, one Volume per
            channel, fully determined by ``(seed, index)``.
        generator_version: bump whenever the generated content changes: a dataset written by
            another version is rebuilt.
        default_size_mm: the field of view (x, y, z) in mm that the anatomy is specified for.
    """

    name: str
    title: str
    description: str
    case_prefix: str
    labels: dict[str, int]
    channel_names: tuple[str, ...]
    case: Callable[[int, int, Sequence[float]], tuple[Sequence[Volume], Volume]]
    generator_version: int
    default_size_mm: tuple[float, float, float]

    def case_files(self, index: int) -> tuple[list[str], str]:
        """Case ``index``'s channel images and label, relative to the dataset root."""
        case = f"{self.case_prefix}_{index:03d}"
        images = [f"imagesTr/{case}_{c:04d}{FILE_ENDING}" for c in range(len(self.channel_names))]
        return images, f"labelsTr/{case}{FILE_ENDING}"


def case_id(index: int) -> str:
    """Case identifier of the ``index``-th generated case: ``synth_000``, ``synth_001``, ..."""
    return f"{CASE_PREFIX}_{index:03d}"


def synthetic_case(
    seed: int,
    index: int = 0,
    size_mm: Sequence[float] = DEFAULT_SIZE_MM,
    noise_hu: tuple[float, float] = (15.0, 20.0),
    blur_sigma_mm: float = 1.0,
) -> tuple[Volume, Volume]:
    """One synthetic CT case and its label map, fully determined by ``(seed, index)``.

    Args:
        seed: dataset seed.
        index: case number within the dataset; case ``i`` of
            ``generate_synthetic_dataset(seed=s)`` is ``synthetic_case(s, i)``.
        size_mm: field of view along x, y, z in mm; the anatomy scales with it.
        noise_hu: range of the per-case standard deviation of the Gaussian noise (HU).
        blur_sigma_mm: standard deviation of the Gaussian point spread applied before the
            noise (mm, isotropic: about a voxel in-plane, under half a voxel along z).

    Returns:
        ``(image, label)``: image in HU as int16, label uint8 (0 background, 1 organ,
        2 lesion), both ``(x, y, z)`` on the same grid (x, y spacing 0.9-1.3 mm, z spacing
        2-3 mm, identity direction, origin near (-80, -80, -300) mm, LPS as in ITK).
    """
    size = _check_size(size_mm)
    if not 0 <= noise_hu[0] <= noise_hu[1]:
        raise ValueError(f"noise_hu must be (low, high) with 0 <= low <= high, got {noise_hu}")
    if blur_sigma_mm < 0:
        raise ValueError(f"blur_sigma_mm must be >= 0, got {blur_sigma_mm}")
    # SeedSequence mixes (seed, index) so neighbouring cases get unrelated streams.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))

    spacing, shape = _grid_of_case(rng, size, in_plane_mm=(0.9, 1.3), slice_mm=(2.0, 3.0))
    origin = np.array([-size[0] / 2, -size[1] / 2, -300.0]) + rng.uniform(-30.0, 30.0, 3)
    scale = float(np.min(size / _REFERENCE_SIZE_MM))

    x, y, z = _centred_grid(shape, spacing)
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    centre, semi_a, semi_b, fat, body, inner = _body(rng, x, y, z, size, scale)
    image[body] = rng.uniform(-110.0, -90.0)
    image[inner] = rng.uniform(35.0, 45.0)

    # Spine (ITK's +y is posterior): a bright distractor that an intensity threshold would take.
    spine_radius = rng.uniform(11.0, 15.0) * scale
    spine_y = centre[1] + semi_b - fat - spine_radius - rng.uniform(4.0, 8.0) * scale
    spine_x = centre[0] + rng.uniform(-3.0, 3.0) * scale
    bone = ((x - spine_x) ** 2 + (y - spine_y) ** 2 < spine_radius**2) & inner
    image[bone] = rng.uniform(650.0, 750.0)
    # Intervertebral discs: soft-tissue slabs that cut the bone into vertebrae.
    period = rng.uniform(26.0, 32.0)
    disc = np.abs(((z + rng.uniform(0, period)) % period) - period / 2) < 2.5
    image[bone & disc] = rng.uniform(70.0, 100.0)

    organ_hu = rng.uniform(100.0, 130.0)
    organ, box = _organ(rng, x, y, z, centre, semi_a, semi_b, size, scale)
    organ &= inner[box] & ~bone[box]
    image_box, label_box = image[box], label[box]  # views: writing them writes the volume
    image_box[organ] = organ_hu
    label_box[organ] = LABELS["organ"]
    lesions = _lesions(
        rng, organ, spacing, scale,
        # Hypodense: 65-85 HU below the parenchyma, kept in the 25-60 HU range of real lesions.
        contrast=lambda rng: float(np.clip(organ_hu - rng.uniform(65.0, 85.0), 25.0, 60.0)),
    )
    for lesion, lesion_hu in lesions:
        image_box[lesion] = lesion_hu
        label_box[lesion] = LABELS["lesion"]

    image = _gaussian_blur(image, blur_sigma_mm / spacing)
    image += rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(*noise_hu))
    # Scanners store int16 and clip air at -1024 HU.
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    geometry = (tuple(spacing), tuple(origin), IDENTITY_DIRECTION)
    return Volume(image, *geometry), Volume(label, *geometry)


def _ct_case(seed: int, index: int, size_mm: Sequence[float]) -> tuple[list[Volume], Volume]:
    # `synthetic_case` is looked up when called, not when PHANTOM is built, so that a stand-in
    # for it (tests interrupting a generation) is what the writer calls.
    image, label = synthetic_case(seed, index, size_mm=size_mm)
    return [image], label


PHANTOM = Phantom(
    name="ct",
    title="volseg_synthetic",
    description="Synthetic abdominal-like CT (HU): one organ with 1-3 hypodense lesions, "
                "anisotropic per-case spacing; generated by volseg.data.synthetic.",
    case_prefix=CASE_PREFIX,
    labels=LABELS,
    channel_names=("CT",),
    case=_ct_case,
    generator_version=GENERATOR_VERSION,
    default_size_mm=DEFAULT_SIZE_MM,
)


def _along(values: np.ndarray, axis: int) -> np.ndarray:
    """A 1D array shaped to broadcast along ``axis`` of a 3D volume."""
    return values.reshape([-1 if a == axis else 1 for a in range(3)])


def _grid_of_case(
    rng: np.random.Generator,
    size: np.ndarray,
    in_plane_mm: tuple[float, float],
    slice_mm: tuple[float, float],
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A case's voxel spacing (mm, square in-plane, drawn from the ranges) and grid shape.

    The grid covers the field of view ``size`` (mm), at least 8 voxels along each axis.
    """
    in_plane = rng.uniform(*in_plane_mm)
    spacing = np.array([in_plane, in_plane, rng.uniform(*slice_mm)])
    shape = tuple(int(n) for n in np.maximum(np.round(size / spacing), 8))
    return spacing, shape


def _centred_grid(
    shape: Sequence[int], spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (mm) relative to the centre of the field of view.

    Open grids, ``(n, 1, 1)``, ``(1, n, 1)`` and ``(1, 1, n)``, so every mask built from them
    broadcasts to ``(x, y, z)`` without building full coordinate arrays.
    """
    x, y, z = (
        _along(((np.arange(n) - (n - 1) / 2) * s).astype(np.float32), axis)
        for axis, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )
    return x, y, z


def _body(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    size: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, float, float, np.float32, np.ndarray, np.ndarray]:
    """An elliptic cylinder, wider than deep, whose outline breathes slowly along z.

    Returns:
        ``(centre, semi_a, semi_b, fat, body, inner)``: the centre (x, y) and semi-axes in mm,
        the thickness of the subcutaneous fat rim in mm, the body mask and the mask inside the
        fat rim (both full volume).
    """
    centre = np.array([rng.uniform(-0.03, 0.03) * size[0], rng.uniform(-0.03, 0.03) * size[1]])
    semi_a = size[0] / 2 * rng.uniform(0.80, 0.92)
    semi_b = size[1] / 2 * rng.uniform(0.68, 0.80)
    wobble = 1 + 0.04 * np.cos(2 * np.pi * z / rng.uniform(80, 160) + rng.uniform(0, 2 * np.pi))
    # float32 throughout: these masks are full-volume operations.
    a, b = (np.float32(semi) * wobble for semi in (semi_a, semi_b))
    fat = np.float32(rng.uniform(6.0, 14.0) * scale)
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    body = (dx / a) ** 2 + (dy / b) ** 2 < 1
    inner = (dx / (a - fat)) ** 2 + (dy / (b - fat)) ** 2 < 1
    return centre, semi_a, semi_b, fat, body, inner


def _organ(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    centre: np.ndarray,
    semi_a: float,
    semi_b: float,
    size: np.ndarray,
    scale: float,
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """The CT organ: a deformed ellipsoid right of and in front of the body's centre."""
    radii = rng.uniform(30.0, 45.0, 3) * scale
    radii[2] = min(radii[2], 0.4 * size[2])
    organ_centre = np.array([
        centre[0] - rng.uniform(0.1, 0.25) * semi_a,
        centre[1] - rng.uniform(0.05, 0.2) * semi_b,
        rng.uniform(-0.1, 0.1) * size[2],
    ])
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    return _deformed_ellipsoid(rng, (x, y, z), organ_centre, radii, angle)


def _deformed_ellipsoid(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    radii: np.ndarray,
    angle: float,
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """An ellipsoid rotated about z, deformed by a low-frequency random field, in its box.

    The shape is ``{p : |u(p)| + d(u(p)) < 1}`` with ``u`` the point in the ellipsoid's own
    unit coordinates and ``d`` a sum of a few random cosines of under ~1 cycle per radius, so
    the outline bulges smoothly (by at most 20%) and differs from case to case.

    Args:
        rng: draws the deformation.
        grid: the volume's open coordinate grids (`_centred_grid`), mm.
        centre: centre (x, y, z) in mm, in the grid's coordinates.
        radii: semi-axes in mm, before the rotation.
        angle: rotation about z in radians.

    Returns:
        ``(mask, box)``: the mask over ``box``, the volume's slices that hold the shape.
    """
    x, y, z = grid
    n_waves = 4
    frequencies = rng.normal(size=(n_waves, 3))
    frequencies *= (rng.uniform(0.3, 0.9, n_waves) / np.linalg.norm(frequencies, axis=1))[:, None]
    amplitudes = rng.uniform(0.02, 0.05, n_waves)
    phases = rng.uniform(0, 2 * np.pi, n_waves)

    # Work inside the bounding box of the largest outline the deformation allows.
    reach = np.array([radii[:2].max(), radii[:2].max(), radii[2]]) * (1 + amplitudes.sum()) + 1
    box = tuple(
        _index_range(axis_coords.ravel(), c - r, c + r)
        for axis_coords, c, r in zip((x, y, z), centre, reach, strict=True)
    )
    px, py, pz = (g - np.float32(c) for g, c in
                  zip((x[box[0]], y[:, box[1]], z[..., box[2]]), centre, strict=True))
    cos, sin = np.cos(angle), np.sin(angle)
    u = np.stack(np.broadcast_arrays((cos * px + sin * py) / radii[0],
                                     (-sin * px + cos * py) / radii[1], pz / radii[2]))
    u = u.astype(np.float32, copy=False)
    field = np.linalg.norm(u, axis=0)
    for f, amplitude, phase in zip(frequencies, amplitudes, phases, strict=True):
        wave = np.tensordot((2 * np.pi * f).astype(np.float32), u, axes=1)
        field += np.float32(amplitude) * np.cos(wave + np.float32(phase))
    return field < 1, box


def _index_range(coords: np.ndarray, low: float, high: float) -> slice:
    """Slice of the sorted ``coords`` that covers ``[low, high]``."""
    start = int(np.searchsorted(coords, low, side="left"))
    stop = int(np.searchsorted(coords, high, side="right"))
    return slice(max(start - 1, 0), min(stop + 1, coords.size))


def _lesions(
    rng: np.random.Generator,
    organ: np.ndarray,
    spacing: np.ndarray,
    scale: float,
    contrast: Callable[[np.random.Generator], _Contrast],
    radius_mm: tuple[float, float] = (7.0, 14.0),
    count: tuple[int, int] = (1, 3),
    min_radius_voxels: float = 2.0,
) -> list[tuple[np.ndarray, _Contrast]]:
    """Non-overlapping lesions, each enclosed by the organ.

    A lesion is an ellipsoid of radii ``radius_mm`` (at the phantom's default field of view,
    scaled by ``scale``) intersected with the organ eroded by one voxel, so no lesion voxel ever
    touches anything but organ. A placement is kept only when that intersection keeps most of
    the ellipsoid: lesions stay whole, not cut.

    Args:
        rng: draws the lesions.
        organ: the organ mask (any box of the volume); lesions are masks of the same shape.
        spacing: voxel spacing (x, y, z) in mm.
        scale: the phantom's field of view relative to its default.
        contrast: draws a lesion's intensity (whatever the phantom needs), once per lesion.
        radius_mm: range of the lesion radius, mm.
        count: range (inclusive) of the number of lesions wanted.
        min_radius_voxels: no lesion radius under this many of the coarsest voxel size.

    Returns:
        ``(mask, contrast)`` per lesion; fewer than wanted where the organ has no room.
    """
    interior = _erode6(organ)
    candidates = np.argwhere(interior)
    if candidates.size == 0:
        return []
    placed: list[tuple[np.ndarray, float]] = []
    lesions = []
    wanted = int(rng.integers(count[0], count[1] + 1))
    for attempt in range(60):
        if len(lesions) == wanted:
            break
        # Shrink after repeated misses: small or thin organs still get their lesion.
        shrink = 1.0 if attempt < 20 else 0.75 if attempt < 40 else 0.5
        # A floor in voxels of the coarsest axis, or blur and partial volume in a small field
        # of view would wash the lesion's contrast out.
        radius = max(rng.uniform(*radius_mm) * scale, min_radius_voxels * spacing.max()) * shrink
        centre = candidates[rng.integers(len(candidates))]
        centre_mm = centre * spacing
        if any(np.linalg.norm(centre_mm - c) < radius + r + 3.0 * scale for c, r in placed):
            continue
        axes = radius * rng.uniform(0.85, 1.15, 3)
        # Evaluate the ellipsoid only in its own bounding box, not the organ's.
        reach = np.ceil(axes / spacing).astype(int) + 1
        box = tuple(slice(max(c - r, 0), min(c + r + 1, n))
                    for c, r, n in zip(centre, reach, organ.shape, strict=True))
        offsets = [
            _along((np.arange(b.start, b.stop) - c) * s / r, axis)
            for axis, (b, c, s, r) in enumerate(zip(box, centre, spacing, axes, strict=True))
        ]
        ball = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2 < 1
        inside = ball & interior[box]
        # Whole (not clipped by the organ's border) and not a speck.
        if inside.sum() < max(0.9 * ball.sum(), 4):
            continue
        lesion = np.zeros_like(organ)
        lesion[box] = inside
        placed.append((centre_mm, float(axes.max())))
        lesions.append((lesion, contrast(rng)))
    return lesions


def _erode6(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with the 6-neighbourhood; voxels on the array border are removed."""
    out = np.zeros_like(mask)
    core = (slice(1, -1),) * 3
    out[core] = mask[core]
    for axis in range(3):
        for step in (-1, 1):
            shifted = [slice(1, -1)] * 3
            shifted[axis] = slice(1 + step, mask.shape[axis] - 1 + step)
            out[core] &= mask[tuple(shifted)]
    return out


def _gaussian_blur(volume: np.ndarray, sigma: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur with edge-replicating borders (sigma in voxels, per axis)."""
    for axis, axis_sigma in enumerate(sigma):
        if axis_sigma <= 0:
            continue
        radius = max(int(np.ceil(3 * axis_sigma)), 1)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / axis_sigma) ** 2)
        taps = (taps / taps.sum()).astype(np.float32)
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(volume, pad, mode="edge")
        out = np.zeros_like(volume)
        term = np.empty_like(volume)
        n = volume.shape[axis]
        for offset, weight in enumerate(taps):
            window = [slice(None)] * 3
            window[axis] = slice(offset, offset + n)
            np.multiply(padded[tuple(window)], weight, out=term)
            out += term
        volume = out
    return volume


def _check_size(size_mm: Sequence[float]) -> np.ndarray:
    size = np.asarray(size_mm, dtype=float)
    if size.shape != (3,) or not np.all(size >= _MIN_SIZE_MM):
        raise ValueError(f"size_mm must be 3 lengths (x, y, z) of at least {_MIN_SIZE_MM} mm, "
                         f"got {size_mm}")
    return size


def generate_synthetic_dataset(
    root: str | os.PathLike,
    num_cases: int = 30,
    seed: int = 0,
    size_mm: Sequence[float] = DEFAULT_SIZE_MM,
) -> Path:
    """Write the synthetic CT dataset under ``root``, once (cases ``synth_000``, ...).

    `generate_phantom_dataset` of `PHANTOM`: see there for the arguments, when it writes and
    what it replaces.

    Raises:
        FileExistsError: ``root`` exists and is not a synthetic dataset (never overwritten).
    """
    return generate_phantom_dataset(PHANTOM, root, num_cases=num_cases, seed=seed,
                                    size_mm=size_mm)


def generate_phantom_dataset(
    phantom: Phantom,
    root: str | os.PathLike,
    num_cases: int = 30,
    seed: int = 0,
    size_mm: Sequence[float] | None = None,
) -> Path:
    """Write a phantom's dataset under ``root`` in the nnU-Net v2 raw layout, once.

    Nothing is written when ``root`` already holds the dataset for these parameters (recorded
    under ``"volseg_synthetic"`` in ``dataset.json``). Otherwise the dataset is built in a
    temporary sibling folder and renamed onto ``root``, replacing an older synthetic dataset (of
    any phantom): an interrupted run never leaves a partial dataset under ``root``, and of two
    processes generating at once, the one that loses the rename uses the winner's (identical)
    dataset.

    Args:
        phantom: what to generate (`PHANTOM` here, `volseg.data.synthetic_mri.PHANTOM`).
        root: the dataset folder (holds ``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        num_cases: number of cases, named ``<phantom.case_prefix>_000``, ...
        seed: dataset seed; the same seed gives the same volumes (bit-identical for a given
            numpy build).
        size_mm: field of view along x, y, z in mm (each at least 48 mm); ``None`` is the
            phantom's default.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: ``root`` exists and is not a synthetic dataset (never overwritten).
    """
    if isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer)) \
            or num_cases < 1:
        raise ValueError(f"num_cases must be a positive integer, got {num_cases!r}")
    root = Path(root)
    params = {
        "generator_version": phantom.generator_version,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "size_mm": [float(s) for s in _check_size(
            phantom.default_size_mm if size_mm is None else size_mm)],
    }
    if phantom is not PHANTOM:
        # Named, so that one phantom's dataset never passes for another's. The CT phantom, the
        # first, stays unnamed: the datasets it wrote before there were two remain current.
        params = {"phantom": phantom.name, **params}
    if _is_current(root, params, phantom):
        return root
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(root)

    tmp = _sibling(root, "partial")
    try:
        tmp.mkdir()
        for index in range(num_cases):
            channels, label = phantom.case(seed, index, params["size_mm"])
            images, label_file = phantom.case_files(index)
            for channel, image_file in zip(channels, images, strict=True):
                write_volume(channel, tmp / image_file)
            write_volume(label, tmp / label_file)
        # dataset.json last: its presence marks a complete dataset.
        write_json(_dataset_json(phantom, params), tmp / "dataset.json")
        _publish(tmp, root, params, phantom)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _dataset_json(phantom: Phantom, params: dict) -> dict:
    return {
        "name": phantom.title,
        "description": phantom.description,
        "channel_names": {str(c): name for c, name in enumerate(phantom.channel_names)},
        "labels": dict(phantom.labels),
        "numTraining": params["num_cases"],
        "file_ending": FILE_ENDING,
        _PARAMS_KEY: params,
    }


def _read_dataset_json(root: Path) -> dict | None:
    try:
        return json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return None


def _is_current(root: Path, params: dict, phantom: Phantom = PHANTOM) -> bool:
    """Whether ``root`` holds ``phantom``'s complete dataset for exactly these parameters."""
    meta = _read_dataset_json(root)
    if not isinstance(meta, dict) or meta.get(_PARAMS_KEY) != params:
        return False
    # A user may have deleted files by hand; a cheap existence check catches it.
    return all(
        all((root / path).is_file() for path in [*images, label])
        for images, label in map(phantom.case_files, range(params["num_cases"]))
    )


def _check_replaceable(root: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier synthetic dataset."""
    if not os.path.lexists(root):
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; not replacing it")
    if not any(root.iterdir()):
        return
    meta = _read_dataset_json(root)
    if not (isinstance(meta, dict) and _PARAMS_KEY in meta):
        raise FileExistsError(
            f"{root} holds something other than a volseg synthetic dataset (no "
            f"'{_PARAMS_KEY}' in its dataset.json); not replacing it. Choose another root."
        )


def _publish(tmp: Path, root: Path, params: dict, phantom: Phantom) -> None:
    """Rename the finished ``tmp`` onto ``root``, moving an older dataset out of the way."""
    for _ in range(10):
        try:
            # Atomic; fails when root is a non-empty folder (an older dataset, or a
            # concurrent winner's).
            os.rename(tmp, root)
            return
        except OSError:
            if _is_current(root, params, phantom):
                return  # another process finished first; ours is removed by the caller
            _check_replaceable(root)
            old = _sibling(root, "old")
            try:
                os.rename(root, old)
            except FileNotFoundError:
                continue  # someone else moved it; just retry the rename
            try:
                os.rename(tmp, root)
            except OSError:
                continue  # a concurrent writer got in between; re-check what is there now
            finally:
                shutil.rmtree(old, ignore_errors=True)
            return
    raise RuntimeError(f"could not publish the synthetic dataset at {root}: it keeps changing "
                       "(concurrent generations with different parameters?)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _sibling(root: Path, kind: str) -> Path:
    """A unique hidden sibling of ``root``; host and pid let a later run spot dead leftovers."""
    return root.with_name(f".{root.name}.{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove_stale_siblings(root: Path) -> None:
    """Delete temporary siblings left by killed generations on this host.

    Only folders whose process is gone are touched: a live generation (here or on another
    host sharing the file system) keeps its folder.
    """
    pattern = re.compile(rf"\.{re.escape(root.name)}\.(?:partial|old)-(\w+)-(\d+)-[0-9a-f]+")
    host = _host()
    for path in root.parent.glob(f".{root.name}.*"):
        match = pattern.fullmatch(path.name)
        if match and match.group(1) == host and not _pid_alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe liveness probe (os.kill would terminate it): keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
