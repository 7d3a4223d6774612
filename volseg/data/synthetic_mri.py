"""The built-in synthetic MRI dataset: two channels, thin vessels, a lobed organ, faint lesions.

Each case is a small abdomen-like MR study of two co-registered channels on one grid, "T1"
(contrast-enhanced) and "T2". Inside an elliptic body with a fat rim lie a lobed organ (label 2,
the union of two to four deformed ellipsoids), an unlabelled neighbour organ that touches it
(as bright as the organ on T1, much brighter on T2: only both channels together separate them),
a tree of thin vessels (label 1, 1.2-3 mm radius, bright on T1, dark on T2) running obliquely
through the slices, and one to four small lesions inside the organ (label 3, 3-8 mm radius,
10-20% darker than the organ on T1 and 10-20% brighter on T2). A smooth multiplicative bias
field (+-20-30%, its own per case and channel), Rician noise and an arbitrary intensity scale
per case and channel make intensities mean nothing until normalised per case. Voxels are
strongly anisotropic (0.8-1.0 mm in-plane, 3-4 mm slices, varying per case).

It differs in kind from the CT phantom (`volseg.data.synthetic`), whose Hounsfield units are
absolute, whose single channel suffices and whose structures are all blob-like: the project's
defaults are chosen on that one and judged on this one. Both are written by
`volseg.data.synthetic.generate_phantom_dataset`, this one as ``synthmr_000_0000.nii.gz`` (T1)
and ``synthmr_000_0001.nii.gz`` (T2) in ``imagesTr/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from volseg.data.synthetic import (
    Phantom,
    _body,
    _centred_grid,
    _check_size,
    _deformed_ellipsoid,
    _gaussian_blur,
    _grid_of_case,
    _index_range,
    _lesions,
)
from volseg.io import IDENTITY_DIRECTION, Volume

# Bump whenever the generated content changes: a dataset written by another version is rebuilt.
GENERATOR_VERSION = 1
# 96 x 96 x 38-39 voxels at 1.5 x 1.5 x 3.5 mm, the spacing conf/data/synthetic_mri.yaml uses.
DEFAULT_SIZE_MM = (144.0, 144.0, 136.0)
# The anatomy below is specified in mm for the default field of view and scaled with it.
_REFERENCE_SIZE_MM = np.array(DEFAULT_SIZE_MM)
LABELS = {"background": 0, "vessel": 1, "organ": 2, "lesion": 3}
CHANNEL_NAMES = ("T1", "T2")
CASE_PREFIX = "synthmr"

# Tissues, indices into the per-case signal table; lesion i is tissue _LESION + i.
_AIR, _FAT, _SOFT, _NEIGHBOUR, _ORGAN, _VESSEL, _LESION = range(7)
_MAX_LESIONS = 4
_TISSUE_LABELS = np.array([0, 0, 0, 0, LABELS["organ"], LABELS["vessel"]]
                          + [LABELS["lesion"]] * _MAX_LESIONS, dtype=np.uint8)
# Generations of the vessel tree (1, 2, 4, 8 branches) and straight segments per branch.
_GENERATIONS = 4
_SEGMENTS_PER_BRANCH = 5
# Thinner than ~1.3 in-plane voxels, a vessel breaks up into specks on the grid.
_MIN_VESSEL_RADIUS_MM = 1.2


def synthetic_mri_case(
    seed: int,
    index: int = 0,
    size_mm: Sequence[float] = DEFAULT_SIZE_MM,
    noise: tuple[float, float] = (0.03, 0.06),
    bias: tuple[float, float] = (0.2, 0.3),
    blur_sigma_mm: float = 0.6,
) -> tuple[tuple[Volume, Volume], Volume]:
    """One synthetic two-channel MR case and its label map, fully determined by ``(seed, index)``.

    Args:
        seed: dataset seed.
        index: case number within the dataset; case ``i`` of the dataset generated with seed
            ``s`` is ``synthetic_mri_case(s, i)``.
        size_mm: field of view along x, y, z in mm; the anatomy scales with it.
        noise: range of the per-case, per-channel standard deviation of the Gaussian noise in
            the real and imaginary parts (so Rician in the magnitude), as a fraction of the
            organ's signal on that channel.
        bias: range of the per-case, per-channel strength ``b`` of the bias field, which spans
            ``[1 / (1 + b), 1 + b]`` over the body; ``(0, 0)`` turns it off.
        blur_sigma_mm: standard deviation of the Gaussian point spread applied before the bias
            field and the noise (mm, isotropic: under a voxel in-plane, a fraction along z).

    Returns:
        ``((t1, t2), label)``: the channels as int16 (non-negative, on an arbitrary scale per
        case and channel), the label uint8 (0 background, 1 vessel, 2 organ, 3 lesion), all
        ``(x, y, z)`` on the same grid (x, y spacing 0.8-1.0 mm, z spacing 3-4 mm, identity
        direction, origin near minus half the field of view, LPS as in ITK).
    """
    size = _check_size(size_mm)
    for name, (low, high) in (("noise", noise), ("bias", bias)):
        if not 0 <= low <= high:
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}")
    if blur_sigma_mm < 0:
        raise ValueError(f"blur_sigma_mm must be >= 0, got {blur_sigma_mm}")
    # SeedSequence mixes (seed, index) so neighbouring cases get unrelated streams.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))

    spacing, shape = _grid_of_case(rng, size, in_plane_mm=(0.8, 1.0), slice_mm=(3.0, 4.0))
    origin = -size / 2 + rng.uniform(-20.0, 20.0, 3)
    scale = float(np.min(size / _REFERENCE_SIZE_MM))
    grid = _centred_grid(shape, spacing)

    tissue = np.full(shape, _AIR, dtype=np.uint8)
    centre, semi_a, semi_b, _, body, inner = _body(rng, *grid, size, scale)
    tissue[body] = _FAT
    tissue[inner] = _SOFT
    organ_centre = np.array([
        centre[0] - rng.uniform(0.15, 0.3) * semi_a,
        centre[1] - rng.uniform(0.0, 0.15) * semi_b,
        rng.uniform(-0.1, 0.1) * size[2],
    ])
    organ = _lobed_organ(rng, grid, shape, organ_centre, size, scale) & inner
    neighbour = _neighbour(rng, grid, spacing, organ, organ_centre, size, scale) & inner & ~organ
    tissue[neighbour] = _NEIGHBOUR
    tissue[organ] = _ORGAN
    vessel = _vessels(rng, grid, spacing, organ_centre, scale) & inner
    tissue[vessel] = _VESSEL
    lesions = _lesions(
        rng, organ & ~vessel, spacing, scale,
        # Low contrast, in opposite directions on the two channels (fractions of the organ's).
        contrast=lambda rng: rng.uniform(0.10, 0.20, 2),
        radius_mm=(3.0, 8.0), count=(1, _MAX_LESIONS),
        # One voxel of the 3-4 mm slices: the smallest lesions show on a single slice.
        min_radius_voxels=1.0,
    )
    signal = _signals(rng, [contrast for _, contrast in lesions])
    for i, (lesion, _) in enumerate(lesions):
        tissue[lesion] = _LESION + i

    channels = []
    for channel_signal in signal.T:
        image = _gaussian_blur(channel_signal.astype(np.float32)[tissue], blur_sigma_mm / spacing)
        image *= _bias_field(rng, grid, size, body, rng.uniform(*bias))
        # Arbitrary units: z-scoring per case is what makes cases comparable.
        intensity_scale = np.exp(rng.uniform(np.log(300.0), np.log(3000.0)))
        sigma = rng.uniform(*noise) * channel_signal[_ORGAN]
        real = image + np.float32(sigma) * rng.standard_normal(shape, dtype=np.float32)
        imaginary = np.float32(sigma) * rng.standard_normal(shape, dtype=np.float32)
        # Magnitude reconstruction: Rician noise, non-zero (not 0) in the air around the body.
        image = np.hypot(real, imaginary) * np.float32(intensity_scale)
        channels.append(np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16))

    geometry = (tuple(spacing), tuple(origin), IDENTITY_DIRECTION)
    t1, t2 = (Volume(channel, *geometry) for channel in channels)
    return (t1, t2), Volume(_TISSUE_LABELS[tissue], *geometry)


def _lobed_organ(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    shape: tuple[int, int, int],
    centre: np.ndarray,
    size: np.ndarray,
    scale: float,
) -> np.ndarray:
    """The union of a main lobe and one to three smaller ones, as a full-volume mask.

    Each lobe's centre lies well inside the main lobe, so the union is one connected organ
    whose outline has the notches of a real lobed organ.
    """
    radii = rng.uniform(26.0, 36.0, 3) * scale
    radii[2] = min(radii[2], 0.35 * size[2])
    lobes = [(centre, radii)]
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.normal(size=3) * [1.0, 1.0, 0.5]  # lobes spread more in-plane
        offset = direction / np.linalg.norm(direction) * radii * rng.uniform(0.35, 0.65)
        lobes.append((centre + offset, radii * rng.uniform(0.5, 0.8, 3)))
    organ = np.zeros(shape, dtype=bool)
    for lobe_centre, lobe_radii in lobes:
        mask, box = _deformed_ellipsoid(rng, grid, lobe_centre, lobe_radii,
                                        rng.uniform(-np.pi, np.pi))
        organ[box] |= mask
    return organ


def _neighbour(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: np.ndarray,
    organ: np.ndarray,
    organ_centre: np.ndarray,
    size: np.ndarray,
    scale: float,
) -> np.ndarray:
    """A deformed ellipsoid that holds the organ's outermost voxel in one medial direction.

    Walking from the organ's centre towards the body's midline (within 50 degrees of +x), the
    last organ voxel on the way lies within 0.8 of the ellipsoid's unit radius (deformation
    included), so the neighbour, once the organ is cut out of it, touches the organ there.
    """
    angle = rng.uniform(-np.deg2rad(50.0), np.deg2rad(50.0))
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    steps = np.arange(0.0, float(size.max()), spacing[0] / 2)
    points = organ_centre + steps[:, None] * direction
    index = np.rint(points / spacing + (np.array(organ.shape) - 1) / 2).astype(int)
    on_grid = np.all((index >= 0) & (index < organ.shape), axis=1)
    inside = np.zeros(len(steps), dtype=bool)
    inside[on_grid] = organ[tuple(index[on_grid].T)]
    edge = organ_centre + steps[inside].max(initial=0.0) * direction

    radii = rng.uniform(18.0, 26.0) * scale * rng.uniform(0.85, 1.15, 3)
    radii[2] = min(radii[2], 0.3 * size[2])
    centre = edge + direction * radii.min() * rng.uniform(0.3, 0.6)
    neighbour = np.zeros(organ.shape, dtype=bool)
    mask, box = _deformed_ellipsoid(rng, grid, centre, radii, rng.uniform(-np.pi, np.pi))
    neighbour[box] = mask
    return neighbour


def _vessels(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: np.ndarray,
    organ_centre: np.ndarray,
    scale: float,
) -> np.ndarray:
    """A branching vessel tree through the organ, as a full-volume mask.

    The trunk (radius 2.4-3 mm, 30-45 mm long) rises or falls 25-50 degrees through the slices
    and passes near the organ's centre; each branch ends in two children turned 25-60 degrees
    to either side, 0.7-0.8 times as thick (never under 1.2 mm) and 0.65-0.8 times as long, for
    four generations. Every branch curves: each of its segments turns by a small random angle.
    """
    shape = tuple(g.size for g in grid)
    elevation = rng.uniform(np.deg2rad(25.0), np.deg2rad(50.0)) * rng.choice([-1.0, 1.0])
    azimuth = rng.uniform(0.0, 2 * np.pi)
    direction = np.array([np.cos(elevation) * np.cos(azimuth),
                          np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    length = rng.uniform(30.0, 45.0) * scale
    start = organ_centre - direction * length * rng.uniform(0.3, 0.5)
    radius = max(rng.uniform(2.4, 3.0) * scale, _MIN_VESSEL_RADIUS_MM)

    vessel = np.zeros(shape, dtype=bool)
    branches = [(start, direction, radius, length, 0)]
    while branches:
        point, direction, radius, length, generation = branches.pop()
        for _ in range(_SEGMENTS_PER_BRANCH):
            direction = _unit(direction + rng.uniform(0.1, 0.3) * _perpendicular(rng, direction))
            end = point + direction * length / _SEGMENTS_PER_BRANCH
            _draw_tube(vessel, grid, spacing, point, end, radius)
            point = end
        if generation + 1 < _GENERATIONS:
            side = _perpendicular(rng, direction)
            for sign in (1.0, -1.0):
                turn = np.deg2rad(rng.uniform(25.0, 60.0))
                child = np.cos(turn) * direction + sign * np.sin(turn) * side
                branches.append((point, child,
                                 max(radius * rng.uniform(0.7, 0.8), _MIN_VESSEL_RADIUS_MM),
                                 length * rng.uniform(0.65, 0.8), generation + 1))
    return vessel


def _draw_tube(
    vessel: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    radius: float,
) -> None:
    """Mark the voxels whose slice the tube ``start``-``end`` (mm) of ``radius`` crosses.

    A voxel is in the tube when any point of the segment through its centre along z, one slice
    thick, is. Testing the centre alone would drop a vessel of 1.2 mm radius that runs between
    two slice centres 3-4 mm apart, and break an oblique one into disconnected pieces; a slice
    integrates over its thickness, and so does the label (sampled every quarter slice: less
    than the smallest radius, so no tube slips between samples).
    """
    half = spacing[2] / 2
    reach = np.array([radius, radius, radius + half])
    box = tuple(
        _index_range(g.ravel(), low, high)
        for g, low, high in zip(grid, np.minimum(start, end) - reach,
                                np.maximum(start, end) + reach, strict=True)
    )
    x, y, z = grid
    px, py, pz = (g - np.float32(s) for g, s in
                  zip((x[box[0]], y[:, box[1]], z[..., box[2]]), start, strict=True))
    axis = (end - start).astype(np.float32)
    length2 = max(float(axis @ axis), 1e-12)
    nearest = np.full(vessel[box].shape, np.inf, dtype=np.float32)
    for dz in np.linspace(-half, half, 5, dtype=np.float32):
        qz = pz + dz
        t = np.clip((px * axis[0] + py * axis[1] + qz * axis[2]) / np.float32(length2), 0, 1)
        distance2 = (px - t * axis[0]) ** 2 + (py - t * axis[1]) ** 2 + (qz - t * axis[2]) ** 2
        np.minimum(nearest, distance2, out=nearest)
    vessel[box] |= nearest < np.float32(radius**2)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _perpendicular(rng: np.random.Generator, direction: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``direction``."""
    vector = rng.normal(size=3)
    return _unit(vector - (vector @ direction) * direction)


def _signals(rng: np.random.Generator, lesion_contrasts: Sequence[np.ndarray]) -> np.ndarray:
    """Relative signal of each tissue on (T1, T2), before blur, bias field, scale and noise.

    Returns:
        ``(tissues, 2)``: a row per tissue (`_AIR` ... `_VESSEL`, then one per lesion).
    """
    organ = np.array([rng.uniform(0.58, 0.66), rng.uniform(0.38, 0.46)])
    signal = np.zeros((_LESION + len(lesion_contrasts), 2))
    signal[_FAT] = rng.uniform(0.9, 1.0), rng.uniform(0.75, 0.85)
    signal[_SOFT] = rng.uniform(0.38, 0.44), rng.uniform(0.28, 0.34)
    # Within 4% of the organ on T1, 1.5-1.8 times as bright on T2.
    signal[_NEIGHBOUR] = organ * [rng.uniform(0.96, 1.04), rng.uniform(1.5, 1.8)]
    signal[_ORGAN] = organ
    # Contrast-enhanced blood is bright on T1; flowing blood is dark on T2 (flow void).
    signal[_VESSEL] = rng.uniform(1.15, 1.3), rng.uniform(0.15, 0.25)
    for i, (darker_t1, brighter_t2) in enumerate(lesion_contrasts):
        signal[_LESION + i] = organ * [1 - darker_t1, 1 + brighter_t2]
    return signal


def _bias_field(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    size: np.ndarray,
    body: np.ndarray,
    strength: float,
) -> np.ndarray:
    """A smooth multiplicative field spanning ``[1 / (1 + strength), 1 + strength]`` in ``body``.

    ``exp`` of a sum of three random cosines of 0.3-0.8 cycles per field of view, shifted and
    scaled so that over the body it runs from ``-log(1 + strength)`` to ``+log(1 + strength)``:
    a receive coil's slow sensitivity falloff. Fitted to the body, not the field of view, so
    that its whole range falls on tissue rather than partly on air.
    """
    x, y, z = grid
    log_field = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
    for _ in range(3):
        frequency = rng.normal(size=3)
        frequency *= 2 * np.pi * rng.uniform(0.3, 0.8) / np.linalg.norm(frequency) / size
        fx, fy, fz = frequency.astype(np.float32)
        log_field += np.float32(rng.uniform(0.5, 1.0)) * np.cos(
            fx * x + fy * y + fz * z + np.float32(rng.uniform(0, 2 * np.pi)))
    inside = log_field[body]
    low, high = float(inside.min()), float(inside.max())
    log_field -= np.float32((low + high) / 2)
    log_field *= np.float32(2 * np.log1p(strength) / max(high - low, 1e-6))
    return np.exp(log_field)


PHANTOM = Phantom(
    name="mri",
    title="volseg_synthetic_mri",
    description="Synthetic abdominal-like MRI (T1 contrast-enhanced, T2; arbitrary units): "
                "thin vessel tree, lobed organ touching an unlabelled neighbour, 1-4 faint "
                "lesions, bias field, Rician noise, 3-4 mm slices; generated by "
                "volseg.data.synthetic_mri.",
    case_prefix=CASE_PREFIX,
    labels=LABELS,
    channel_names=CHANNEL_NAMES,
    case=synthetic_mri_case,
    generator_version=GENERATOR_VERSION,
    default_size_mm=DEFAULT_SIZE_MM,
)
