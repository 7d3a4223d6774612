"""Training augmentation: one composed sampling grid per patch, then intensity changes.

Spatial augmentation (mirroring, rotation, scaling, elastic deformation) is composed into one
map from output patch voxels to source voxel coordinates and applied with ONE resampling, read
straight from the cached volume: only the bounding box of the map's source region is read, so
rotated corners show real anatomy, not padding, and the volume is never resampled as a whole
(as TorchIO and MONAI transforms do, one transform after another). The same functions run on a
CPU patch or on a whole batch on the GPU (`BatchAugmentation`).

The transforms and their defaults follow nnU-Net (Isensee et al. 2021, its
``get_training_transforms``); the elastic deformation follows Çiçek et al. 2016 (Section 2.1:
random displacement vectors on a coarse grid, smoothly interpolated to every voxel).

Conventions: arrays are ``(C, x, y, z)`` images and ``(x, y, z)`` labels; voxel spacing is in
mm; displacements and coordinates are in voxels of the source volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F


def _range(value: Sequence[float], name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"data.augment.{name} must be [low, high] with low <= high, got {value}")
    return low, high


def _check_probability(value: float, name: str) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"data.augment.{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class SpatialParams:
    """One patch's spatial transform, as drawn by `SpatialAugment.draw`.

    Attributes:
        flips: mirror each axis (x, y, z).
        angles: rotation about x, y and z in radians (in physical space).
        scales: per-axis factor on the sampling coordinates: > 1 samples a larger region, so
            structures look smaller (nnU-Net's convention).
        elastic: coarse displacement field ``(3, gx, gy, gz)`` in output voxels, or ``None``.
    """

    flips: tuple[bool, bool, bool] = (False, False, False)
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    elastic: np.ndarray | None = None

    @property
    def resamples(self) -> bool:
        """Whether the transform needs interpolation (flips alone are an axis permutation)."""
        return any(self.angles) or self.scales != (1.0, 1.0, 1.0) or self.elastic is not None


@dataclass(frozen=True)
class SpatialAugment:
    """Random mirroring, rotation, scaling and elastic deformation of a patch.

    Args:
        flip_prob: probability of mirroring each axis independently (nnU-Net: 0.5).
        rotation_prob: probability of a rotation (nnU-Net: 0.2).
        rotation_deg: largest rotation about x, y and z in degrees, drawn uniformly in
            ``[-r, r]``; ``[0, 0, r]`` rotates in-plane only (about z), for very anisotropic data.
        scale_prob: probability of a scaling (nnU-Net: 0.2).
        scale_range: factor range on the sampling coordinates (nnU-Net: 0.7-1.4; volseg 0.85-1.25).
        scale_isotropic: one factor for all axes; false draws one per axis.
        elastic_prob: probability of an elastic deformation (off in nnU-Net; on in Çiçek 2016).
        elastic_sigma: standard deviation of the control-point displacements in voxels
            (Çiçek: 4).
        elastic_max: bound on the displacement length in voxels, anywhere in the patch: control
            vectors are clipped to it and trilinear interpolation is a convex combination, so
            no voxel moves further.
        elastic_spacing: control-point spacing in voxels (Çiçek: 32).
    """

    flip_prob: float = 0.5
    rotation_prob: float = 0.2
    rotation_deg: Sequence[float] = (15.0, 15.0, 15.0)
    scale_prob: float = 0.2
    scale_range: Sequence[float] = (0.85, 1.25)
    scale_isotropic: bool = True
    elastic_prob: float = 0.0
    elastic_sigma: float = 4.0
    elastic_max: float = 10.0
    elastic_spacing: int = 32

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rotation_prob", "scale_prob", "elastic_prob"):
            _check_probability(getattr(self, name), name)
        if len(self.rotation_deg) != 3:
            raise ValueError(f"data.augment.rotation_deg needs 3 angles, got {self.rotation_deg}")
        if _range(self.scale_range, "scale_range")[0] <= 0:
            raise ValueError(f"data.augment.scale_range must be positive, got {self.scale_range}")
        if self.elastic_spacing < 1 or self.elastic_max < 0 or self.elastic_sigma < 0:
            raise ValueError("data.augment.elastic_spacing must be >= 1, elastic_max and "
                             "elastic_sigma >= 0")

    def draw(self, rng: np.random.Generator, patch_size: Sequence[int]) -> SpatialParams:
        """Random parameters for one ``patch_size`` patch."""
        flips = tuple(bool(rng.random() < self.flip_prob) for _ in range(3))
        angles = (0.0, 0.0, 0.0)
        if rng.random() < self.rotation_prob:
            angles = tuple(math.radians(rng.uniform(-r, r)) if r else 0.0
                           for r in self.rotation_deg)
        scales = (1.0, 1.0, 1.0)
        if rng.random() < self.scale_prob:
            low, high = _range(self.scale_range, "scale_range")
            scales = ((float(rng.uniform(low, high)),) * 3 if self.scale_isotropic
                      else tuple(float(rng.uniform(low, high)) for _ in range(3)))
        elastic = None
        if rng.random() < self.elastic_prob:
            elastic = coarse_displacements(rng, patch_size, self.elastic_spacing,
                                           self.elastic_sigma, self.elastic_max)
        return SpatialParams(flips, angles, scales, elastic)  # type: ignore[arg-type]


def coarse_displacements(
    rng: np.random.Generator, patch_size: Sequence[int], spacing: int, sigma: float,
    max_length: float,
) -> np.ndarray:
    """Çiçek's random control vectors ``(3, gx, gy, gz)``: normal, clipped to ``max_length``."""
    grid = [math.ceil((p - 1) / spacing) + 1 for p in patch_size]
    vectors = rng.normal(0.0, sigma, (3, *grid))
    length = np.sqrt((vectors**2).sum(0, keepdims=True))
    vectors *= np.minimum(1.0, max_length / np.maximum(length, 1e-12))
    return vectors.astype(np.float32)


def interpolation_weights(size: int, points: int, device: torch.device | str = "cpu"
                          ) -> torch.Tensor:
    """``(size, points)`` linear-interpolation weights from ``points`` control points spread
    evenly over ``size`` voxels, the first and last on the end voxels (``align_corners``)."""
    if points == 1:
        return torch.ones(size, 1, device=device)
    position = torch.arange(size, dtype=torch.float64, device=device) * (
        (points - 1) / max(size - 1, 1))
    low = position.floor().clamp(max=points - 2).long()
    upper = position - low
    weights = torch.zeros(size, points, dtype=torch.float64, device=device)
    rows = torch.arange(size, device=device)
    weights[rows, low] = 1 - upper
    weights[rows, low + 1] = upper
    return weights.float()


def expand(control: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Trilinear interpolation of control values ``(gx, gy, gz, 3)`` to ``(*patch, 3)``.

    Separable: three small matrix products, far cheaper than a dense 3D interpolation.
    """
    wx, wy, wz = (interpolation_weights(int(p), g, control.device)
                  for p, g in zip(patch_size, control.shape[:3]))
    out = torch.einsum("zk,ijkc->ijzc", wz, control)
    out = torch.einsum("yj,ijzc->iyzc", wy, out)
    gx = out.shape[0]
    return (wx @ out.reshape(gx, -1)).reshape(wx.shape[0], *out.shape[1:])


def elastic_field(coarse: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Dense ``(*patch, 3)`` displacements from control vectors ``(3, gx, gy, gz)``.

    Trilinear interpolation: each output vector is a convex combination of control vectors, so
    its length never exceeds theirs (the bound `SpatialAugment.elastic_max` promises); it is
    smooth between control points, which is what the deformation needs at a 32-voxel spacing.
    """
    return expand(coarse.permute(1, 2, 3, 0), patch_size)


def affine_matrix(params: SpatialParams, spacing: Sequence[float]) -> torch.Tensor:
    """``3 x 3`` map from output voxel offsets to source voxel offsets.

    Mirroring first, then scaling and rotation in physical space (mm), so a rotation of
    anisotropic voxels keeps shapes: ``diag(1/spacing) R diag(scales) diag(spacing) F``.
    """
    ax, ay, az = params.angles
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    mm = torch.tensor([float(s) for s in spacing], dtype=torch.float64)
    flip = torch.tensor([-1.0 if f else 1.0 for f in params.flips], dtype=torch.float64)
    scale = torch.tensor(params.scales, dtype=torch.float64)
    return torch.diag(1 / mm) @ rz @ ry @ rx @ torch.diag(scale * mm * flip)


def control_offsets(
    params: SpatialParams, patch_size: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Source voxel offsets from the patch centre at the control points, ``(gx, gy, gz, 3)``.

    ``offset(u) = A (u + d(u))`` for an output voxel at offset ``u`` from the patch centre,
    with the elastic displacement ``d`` on the output grid, before the affine ``A`` (as in
    nnU-Net's ``augment_spatial``). ``u`` is linear and ``A`` is linear, so trilinear
    interpolation of these control values (`expand`) gives every voxel's offset exactly, and
    their bounding box is the bounding box of the whole patch's source region.
    """
    grid = (params.elastic.shape[1:] if params.elastic is not None else (2, 2, 2))
    axes = [torch.linspace(-(p - 1) / 2, (p - 1) / 2, g, dtype=torch.float64)
            for p, g in zip(patch_size, grid)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    if params.elastic is not None:
        points = points + torch.from_numpy(params.elastic).double().permute(1, 2, 3, 0)
    return (points @ affine_matrix(params, spacing).T).float()


def sampling_offsets(
    params: SpatialParams, patch_size: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Source voxel offsets ``(*patch, 3)`` from the patch centre for every output voxel."""
    return expand(control_offsets(params, patch_size, spacing).to(device), patch_size)


def _normalised(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates (x, y, z) as `grid_sample`'s ``[-1, 1]`` (z, y, x), corners aligned."""
    size = torch.tensor([max(int(s) - 1, 1) for s in shape], dtype=coords.dtype,
                        device=coords.device)
    return (2 * coords / size - 1).flip(-1)


def resample_image(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``(N, C, x, y, z)`` images at voxel ``coords`` ``(N, *out, 3)``.

    Outside the image counts as 0.
    """
    grid = _normalised(coords, image.shape[-3:])
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def resample_label(label: torch.Tensor, coords: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Nearest-neighbour samples of ``(N, x, y, z)`` labels at voxel ``coords`` ``(N, *out, 3)``.

    Exactly ``grid_sample(mode="nearest")`` (round half to even), done as an index lookup so
    labels of any integer type keep their values (the ignore label included) without a float
    copy of the source. Outside the label reads ``fill``.
    """
    shape = torch.tensor(label.shape[-3:], device=coords.device)
    index = torch.round(coords).long()
    inside = ((index >= 0) & (index < shape)).all(-1)
    index = torch.minimum(index.clamp_min(0), shape - 1)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=coords.device)
    flat = (index * strides).sum(-1)
    batch = label.reshape(label.shape[0], -1)
    values = torch.gather(batch, 1, flat.reshape(flat.shape[0], -1)).reshape(flat.shape)
    return torch.where(inside, values, torch.as_tensor(fill, dtype=label.dtype,
                                                       device=label.device))


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float = 0
         ) -> np.ndarray:
    """Cut ``size`` voxels from ``start`` out of the last three axes, ``fill`` outside.

    Reads only the overlapping slab of ``array`` (cheap on memory-mapped arrays).
    """
    lead = array.shape[:-3]
    if all(b >= 0 and b + n <= e for b, n, e in zip(start, size, array.shape[-3:])):
        return np.array(array[(..., *(slice(b, b + n) for b, n in zip(start, size)))])
    out = np.full((*lead, *size), fill, dtype=array.dtype)
    src, dst = [], []
    for begin, length, extent in zip(start, size, array.shape[-3:]):
        lo, hi = max(begin, 0), min(begin + length, extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out[(..., *dst)] = array[(..., *src)]
    return out


def resample_patch(
    image: np.ndarray,
    label: np.ndarray,
    centre: Sequence[float],
    control: torch.Tensor,
    patch_size: Sequence[int],
    label_fill: int = 0,
    annotate: Callable[[np.ndarray, Sequence[int]], np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One resampling of a patch straight from the (memory-mapped) volume.

    Only the bounding box of the source region (plus one voxel) is read: the control points'
    box, since every voxel's position is a convex combination of theirs. ``annotate(label,
    start)``, if given, rewrites that label box first (sparse annotation lives on the volume's
    grid, so it is applied before the transform).

    Args:
        image: ``(C, x, y, z)`` volume; 0 outside it.
        label: ``(x, y, z)`` volume; ``label_fill`` outside it.
        centre: source voxel under the patch centre.
        control: `control_offsets` of the patch.
        patch_size: output size (x, y, z).

    Returns:
        ``(C, *patch)`` float image and ``(*patch)`` label patch.
    """
    points = control.reshape(-1, 3) + torch.tensor([float(c) for c in centre])
    low = torch.floor(points.min(0).values).long().tolist()
    high = torch.floor(points.max(0).values).long().tolist()
    size = [h - lo + 2 for lo, h in zip(low, high)]  # + the upper trilinear neighbour
    image_box = torch.from_numpy(crop(image, low, size)).float()
    label_box = crop(label, low, size, fill=label_fill)
    if annotate is not None:
        label_box = annotate(label_box, low)
    local = control + (torch.tensor([float(c) for c in centre]) - torch.tensor(low))
    # Normalise the few control points, not the millions of voxels: the map is linear.
    grid = expand(_normalised(local, size), patch_size)
    image_patch = F.grid_sample(image_box[None], grid[None], mode="bilinear",
                                padding_mode="zeros", align_corners=True)[0]
    label_patch = _lookup(torch.from_numpy(np.ascontiguousarray(label_box)),
                          expand(local, patch_size))
    return image_patch, label_patch


def _lookup(label: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour values of ``label`` at ``coords`` known to round inside it."""
    strides = torch.tensor([label.shape[1] * label.shape[2], label.shape[2], 1],
                           dtype=coords.dtype)
    # float32 holds the flat index exactly below 2**24 voxels; larger boxes go through int64.
    if label.numel() < 2**24:
        flat = (torch.round(coords) @ strides).long()
    else:
        flat = (torch.round(coords).long() * strides.long()).sum(-1)
    return label.reshape(-1)[flat]


# --- intensity -------------------------------------------------------------------------------

# The intensity transforms in the order they apply (nnU-Net's); each has ``<name>_prob``.
INTENSITY_TRANSFORMS = ("noise", "blur", "brightness", "contrast", "lowres", "gamma")


@dataclass(frozen=True)
class IntensityAugment:
    """Random intensity changes of an image patch, nnU-Net's set and defaults.

    Each applies with its probability and a value drawn uniformly from its range. They work on
    torch tensors, so the same code changes a CPU patch or a GPU batch.

    Args:
        noise_prob, noise_std: additive Gaussian noise, its standard deviation drawn from
            the range (nnU-Net: p 0.1, variance 0-0.1).
        blur_prob, blur_sigma: Gaussian blur, sigma in voxels (nnU-Net: p 0.2, 0.5-1).
        brightness_prob, brightness_range: multiply by a factor (nnU-Net: p 0.15, 0.75-1.25).
        contrast_prob, contrast_range: scale around the mean, clipped to the old range
            (nnU-Net: p 0.15, 0.75-1.25).
        lowres_prob, lowres_zoom: simulate low resolution: nearest downsampling by the zoom,
            trilinear upsampling back (nnU-Net: p 0.25, 0.5-1).
        gamma_prob, gamma_range: gamma on the image rescaled to [0, 1], mean and standard
            deviation restored after (nnU-Net: p 0.3, 0.7-1.5).
    """

    noise_prob: float = 0.1
    noise_std: Sequence[float] = (0.0, 0.1)
    blur_prob: float = 0.2
    blur_sigma: Sequence[float] = (0.5, 1.0)
    brightness_prob: float = 0.15
    brightness_range: Sequence[float] = (0.75, 1.25)
    contrast_prob: float = 0.15
    contrast_range: Sequence[float] = (0.75, 1.25)
    lowres_prob: float = 0.25
    lowres_zoom: Sequence[float] = (0.5, 1.0)
    gamma_prob: float = 0.3
    gamma_range: Sequence[float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        for name in INTENSITY_TRANSFORMS:
            _check_probability(getattr(self, f"{name}_prob"), f"{name}_prob")
        for name in ("noise_std", "blur_sigma", "brightness_range", "contrast_range",
                     "lowres_zoom", "gamma_range"):
            if _range(getattr(self, name), name)[0] < 0:
                raise ValueError(f"data.augment.{name} must not be negative")

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``image`` ``(C, x, y, z)`` changed at random (a new tensor; the input is kept)."""

        def draw(name: str) -> float | None:
            probability = getattr(self, f"{name}_prob")
            if probability == 0 or rng.random() >= probability:
                return None
            values = {"noise": self.noise_std, "blur": self.blur_sigma,
                      "brightness": self.brightness_range, "contrast": self.contrast_range,
                      "lowres": self.lowres_zoom, "gamma": self.gamma_range}[name]
            return float(rng.uniform(*_range(values, name)))

        # nnU-Net's order: noise, blur, brightness, contrast, low resolution, gamma.
        image = image.float()
        if (std := draw("noise")) is not None:
            generator = torch.Generator(device=image.device)
            generator.manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(image.shape, generator=generator, device=image.device)
            image = image.add(noise, alpha=std)
        if (sigma := draw("blur")) is not None:
            image = gaussian_blur(image, sigma)
        if (factor := draw("brightness")) is not None:
            image = image * factor
        if (factor := draw("contrast")) is not None:
            image = adjust_contrast(image, factor)
        if (zoom := draw("lowres")) is not None:
            image = simulate_low_resolution(image, zoom)
        if (gamma := draw("gamma")) is not None:
            image = adjust_gamma(image, gamma)
        return image


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, x, y, z)`` with ``sigma`` voxels, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = image[:, None]  # channels as batch: each blurred alone
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.reshape(shape))
    return out[:, 0]


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each channel about its mean by ``factor``, clipped to its old range (nnU-Net)."""
    dims = tuple(range(1, image.dim()))
    mean = image.mean(dims, keepdim=True)
    low, high = image.amin(dims, keepdim=True), image.amax(dims, keepdim=True)
    return torch.minimum(torch.maximum((image - mean) * factor + mean, low), high)


def simulate_low_resolution(image: torch.Tensor, zoom: float) -> torch.Tensor:
    """Nearest downsampling to ``zoom`` of the size, trilinear back up (nnU-Net)."""
    size = image.shape[1:]
    small = [max(1, round(s * zoom)) for s in size]
    low = F.interpolate(image[None], size=small, mode="nearest")
    return F.interpolate(low, size=tuple(size), mode="trilinear", align_corners=False)[0]


def _mean_std(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of ``(C, ...)``, broadcastable to it.

    Sums in float64 in one pass each: several times faster than `torch.std_mean` on a patch.
    """
    flat = image.flatten(1)
    count = flat.shape[1]
    total = flat.sum(1, dtype=torch.float64)
    squares = torch.linalg.vecdot(flat, flat).double()
    mean = total / count
    var = ((squares - count * mean**2) / max(count - 1, 1)).clamp_min(0)
    view = (-1,) + (1,) * (image.dim() - 1)
    return mean.float().reshape(view), var.sqrt().float().reshape(view)


def adjust_gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """``x ** gamma`` on each channel rescaled to [0, 1]; mean and std restored (nnU-Net's
    ``retain_stats``). Restoring the statistics also undoes the rescaling, so it is skipped."""
    mean, std = _mean_std(image)
    low, high = torch.aminmax(image.flatten(1), dim=1)
    view = (-1,) + (1,) * (image.dim() - 1)
    inverse_span = 1 / (high - low).clamp_min(1e-7).reshape(view)
    out = torch.addcmul(-low.reshape(view) * inverse_span, image, inverse_span).clamp_(0, 1)
    out = out.log_().mul_(gamma).exp_()  # x ** gamma, twice as fast as pow; 0 stays 0
    new_mean, new_std = _mean_std(out)
    scale = std / new_std.clamp_min(1e-7)
    return torch.addcmul(mean - new_mean * scale, out, scale)


# --- configuration and batches ---------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """The ``data.augment`` block: `SpatialAugment` and `IntensityAugment` settings.

    Args:
        spatial: spatial settings (`SpatialAugment` arguments).
        intensity: intensity settings (`IntensityAugment` arguments).
    """

    spatial: SpatialAugment = field(default_factory=SpatialAugment)
    intensity: IntensityAugment = field(default_factory=IntensityAugment)

    @classmethod
    def from_config(cls, settings: Mapping | None, flip_prob: float) -> Augmentation:
        """From the ``data.augment`` mapping (flat keys) and ``data.flip_prob``; ``None``
        mirrors only."""
        if settings is None:
            return cls(SpatialAugment(flip_prob=flip_prob, rotation_prob=0.0, scale_prob=0.0),
                       IntensityAugment(**{f"{n}_prob": 0.0 for n in INTENSITY_TRANSFORMS}))
        spatial_names = {f.name for f in fields(SpatialAugment)}
        intensity_names = {f.name for f in fields(IntensityAugment)}
        unknown = set(settings) - spatial_names - intensity_names
        if unknown or "flip_prob" in settings:
            known = sorted(spatial_names | intensity_names)
            raise ValueError(f"data.augment has unknown settings {sorted(unknown)} (mirroring "
                             f"is data.flip_prob); known: {known}")
        spatial = {k: v for k, v in settings.items() if k in spatial_names}
        intensity = {k: v for k, v in settings.items() if k in intensity_names}
        return cls(SpatialAugment(flip_prob=flip_prob, **spatial), IntensityAugment(**intensity))


class BatchAugmentation:
    """The same augmentation applied to a whole batch on its device (``augment_device: gpu``).

    Each patch gets its own random parameters; all grids are applied with one `grid_sample`.
    The source is the patch the loader cut (no wider context), so content that a rotation or
    a zoom-out brings in from beyond the patch reads as 0 (label: ``label_fill``): crop a larger
    ``data.patch_size`` than the network needs, or use ``augment_device: cpu``, where the
    source is the whole volume.

    Args:
        augmentation: the settings.
        label_fill: label outside the source (``ignore_index`` with sparse labels, else 0).
    """

    def __init__(self, augmentation: Augmentation, label_fill: int = 0) -> None:
        self.augmentation = augmentation
        self.label_fill = label_fill

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """Augment ``batch["image"]`` ``(N, C, x, y, z)`` and ``batch["label"]`` ``(N, x, y, z)``.

        Voxel spacing comes from ``batch["spacing"]`` ``(N, 3)`` when present (1 mm otherwise).
        Randomness comes from torch's default generator (or ``generator``), so a seeded run
        augments the same way.
        """
        image, label = batch["image"], batch["label"]
        seed = int(torch.randint(0, 2**62, (), generator=generator).item())
        rng = np.random.default_rng(seed)
        patch = image.shape[-3:]
        spacing = batch.get("spacing")
        centre = torch.tensor([(p - 1) / 2 for p in patch], device=image.device)
        offsets = []
        for index in range(image.shape[0]):
            mm = spacing[index].tolist() if spacing is not None else (1.0, 1.0, 1.0)
            params = self.augmentation.spatial.draw(rng, patch)
            offsets.append(sampling_offsets(params, patch, mm, image.device))
        coords = torch.stack(offsets) + centre
        image = resample_image(image.float(), coords)
        label = resample_label(label, coords, self.label_fill)
        image = torch.stack([self.augmentation.intensity(one, rng) for one in image])
        return {**batch, "image": image, "label": label}
