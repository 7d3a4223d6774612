"""Per-case preprocessing: intensity normalisation and resampling to a target spacing.

The same `Preprocessor` runs on training data (once, then cached) and on every volume given to
`predict.py`: its settings travel inside the checkpoint (`to_dict` / `from_dict`), as nnU-Net's
plans do, so a prediction sees exactly what training saw.

Resampling keeps the volume's physical extent: with ``n`` voxels of size ``s`` resampled to
``n' = round(n * s / t)`` voxels for a target spacing ``t``, the new voxels have size
``s * n / n'`` (within half a voxel of ``t``) and the new grid spans the same box. This is
``torch.nn.functional.interpolate`` with ``align_corners=False``, and it is exactly invertible in
shape: `restore` maps probabilities back onto the original ``n`` voxels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from volseg.io import Volume

INTENSITY_SCHEMES = ("ct_window", "zscore", "none")
# Relative spacing difference under which a volume is left on its own grid: resampling by
# less than this would only blur it.
SPACING_TOLERANCE = 0.01


@dataclass
class Preprocessor:
    """Intensity normalisation then resampling, with the settings stored in checkpoints.

    Args:
        spacing: target voxel spacing (x, y, z) in mm; ``None`` keeps each volume's own grid.
        intensity: ``"ct_window"`` clips to ``window`` (HU) and scales to [0, 1];
            ``"zscore"`` subtracts the mean and divides by the standard deviation per channel
            (over non-zero voxels when ``nonzero`` is true, the usual choice for skull-stripped
            MRI); ``"none"`` leaves values as read.
        window: (lower, upper) HU bounds for ``"ct_window"``.
        nonzero: restrict z-score statistics to non-zero voxels.
    """

    spacing: Sequence[float] | None = None
    intensity: str = "ct_window"
    window: Sequence[float] = field(default=(-1000.0, 400.0))
    nonzero: bool = False

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_SCHEMES:
            raise ValueError(
                f"preprocessing.intensity must be one of {INTENSITY_SCHEMES}, "
                f"got {self.intensity!r}"
            )
        if self.spacing is not None:
            self.spacing = [float(s) for s in self.spacing]
            if len(self.spacing) != 3 or min(self.spacing) <= 0:
                raise ValueError(
                    f"data.spacing must be three positive numbers (x, y, z mm), got {self.spacing}"
                )
        self.window = [float(w) for w in self.window]
        if len(self.window) != 2 or self.window[0] >= self.window[1]:
            raise ValueError(f"preprocessing.window must be [lower, upper], got {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Preprocessor:
        return cls(**dict(data))

    # --- geometry -------------------------------------------------------------------------

    def target_shape(self, volume: Volume) -> tuple[int, int, int]:
        """Spatial shape after resampling (voxels)."""
        if self.spacing is None or _same_spacing(volume.spacing, self.spacing):
            return volume.spatial_shape
        return tuple(
            max(1, round(n * s / t))
            for n, s, t in zip(volume.spatial_shape, volume.spacing, self.spacing)
        )

    def resampled_geometry(self, volume: Volume) -> dict:
        """Spacing and origin of the resampled grid, same box and direction as ``volume``."""
        shape = self.target_shape(volume)
        old_spacing = np.asarray(volume.spacing)
        new_spacing = old_spacing * np.asarray(volume.spatial_shape) / np.asarray(shape)
        direction = np.asarray(volume.direction).reshape(3, 3)
        # The first new voxel's centre sits half a new voxel in from the box corner.
        origin = np.asarray(volume.origin) + direction @ ((new_spacing - old_spacing) / 2)
        return {
            "shape": list(shape),
            "spacing": new_spacing.tolist(),
            "origin": origin.tolist(),
            "direction": list(volume.direction),
        }

    # --- images and labels ----------------------------------------------------------------

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """Intensity normalisation of a ``(C, x, y, z)`` image, float32."""
        image = image.astype(np.float32, copy=True)
        if self.intensity == "ct_window":
            lower, upper = self.window
            np.clip(image, lower, upper, out=image)
            image -= lower
            image /= upper - lower
        elif self.intensity == "zscore":
            for channel in image:
                values = channel[channel != 0] if self.nonzero else channel
                if values.size == 0:
                    continue
                mean, std = float(values.mean()), float(values.std())
                channel -= mean
                channel /= max(std, 1e-8)
        return image

    def image(self, volume: Volume) -> Volume:
        """Normalise then resample a ``(C, x, y, z)`` (or 3D) image to the target grid."""
        array = volume.array if volume.array.ndim == 4 else volume.array[None]
        array = self.normalize(array)
        shape = self.target_shape(volume)
        if shape != volume.spatial_shape:
            tensor = torch.from_numpy(array)[None]
            array = F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)[0]
            array = array.numpy()
        return _on_grid(array, self.resampled_geometry(volume))

    def label(self, volume: Volume) -> Volume:
        """Resample a label map with nearest-neighbour (half-voxel-correct ``nearest-exact``)."""
        shape = self.target_shape(volume)
        array = volume.array
        if shape != volume.spatial_shape:
            tensor = torch.from_numpy(array.astype(np.float32))[None, None]
            tensor = F.interpolate(tensor, size=shape, mode="nearest-exact")[0, 0]
            array = tensor.numpy()
        return _on_grid(array.astype(np.uint8), self.resampled_geometry(volume))

    @staticmethod
    def restore(probabilities: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Resample ``(K, x', y', z')`` class probabilities back to the original ``shape``.

        Probabilities (not labels) are interpolated, then the caller takes the argmax, so
        boundaries land between original voxels as smoothly as the network saw them.
        """
        shape = tuple(int(s) for s in shape)
        if tuple(probabilities.shape[-3:]) == shape:
            return probabilities
        return F.interpolate(
            probabilities[None], size=shape, mode="trilinear", align_corners=False
        )[0]

    @classmethod
    def restore_labels(cls, logits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """uint8 label map on the original ``shape`` from ``(K, x', y', z')`` logits.

        Softmax, then `restore` the probabilities, then argmax.
        """
        probabilities = torch.softmax(logits.float(), dim=0)
        return cls.restore(probabilities, shape).argmax(0).to(torch.uint8)


def _same_spacing(spacing: Sequence[float], target: Sequence[float]) -> bool:
    return all(abs(s - t) <= SPACING_TOLERANCE * t for s, t in zip(spacing, target))


def _on_grid(array: np.ndarray, geometry: Mapping) -> Volume:
    return Volume(array, geometry["spacing"], geometry["origin"], geometry["direction"])
