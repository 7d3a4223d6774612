"""Overlay pictures: an image with its reference and predicted labels, as a PNG.

One picture per case, three rows (the planes through the largest structure: perpendicular to
x, y and z) and three columns (image | reference | prediction), each panel drawn at the
physical aspect of its voxels. The PNG is written with zlib alone, so no imaging library is
needed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.io.atomic import atomic_path

# Distinct colours for labels 1, 2, ... (background stays the image); repeats after 10.
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.float32)
ALPHA = 0.45
PANEL_PX = 192  # longest side of a panel, pixels


def write_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 array as an 8-bit RGB PNG (atomically)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"write_png needs (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    # Each row starts with filter type 0 (none).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
           + chunk(b"IEND", b""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


def _grey(image: np.ndarray) -> np.ndarray:
    """Image to [0, 1] by its 1st-99th percentile window: robust to outliers (HU air, metal)."""
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def _panel(grey: np.ndarray, label: np.ndarray | None, pixel_mm: Sequence[float]) -> np.ndarray:
    """An RGB panel of a 2D slice, labels blended in, resized to the physical aspect."""
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=2)
    if label is not None:
        drawn = label > 0
        colours = PALETTE[(label[drawn] - 1) % len(PALETTE)]
        rgb[drawn] = (1 - ALPHA) * rgb[drawn] + ALPHA * colours
    # Rows follow the slice's first axis; nearest-neighbour resize to millimetre aspect.
    extent = np.asarray(grey.shape) * np.asarray(pixel_mm, dtype=float)
    size = np.maximum(1, np.round(extent / extent.max() * PANEL_PX)).astype(int)
    rows = np.minimum((np.arange(size[0]) + 0.5) * grey.shape[0] / size[0], grey.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) + 0.5) * grey.shape[1] / size[1], grey.shape[1] - 1)
    return rgb[rows.astype(int)][:, cols.astype(int)].astype(np.uint8)


def largest_structure_slices(label: np.ndarray) -> tuple[int, int, int]:
    """Per axis, the slice index holding the most foreground voxels (the middle if none)."""
    foreground = label > 0
    if not foreground.any():
        return tuple(n // 2 for n in label.shape)
    picks = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        picks.append(int(foreground.sum(axis=others).argmax()))
    return tuple(picks)


def overlay_picture(
    image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """The ``(H, W, 3)`` picture: rows are the x, y and z planes through the largest
    reference structure; columns image | reference | prediction.

    Args:
        image: ``(x, y, z)`` intensities (the first channel of a multi-channel image).
        reference: ``(x, y, z)`` reference labels.
        prediction: ``(x, y, z)`` predicted labels, same grid.
        spacing: voxel size (x, y, z) in mm, for the panels' aspect.
    """
    if not image.shape == reference.shape == prediction.shape:
        raise ValueError(
            f"image {image.shape}, reference {reference.shape} and prediction "
            f"{prediction.shape} must share one grid"
        )
    grey = _grey(image.astype(np.float32))
    rows = []
    for axis, index in enumerate(largest_structure_slices(reference)):
        take = [slice(None)] * 3
        take[axis] = index
        pixel_mm = [s for a, s in enumerate(spacing) if a != axis]
        panels = [_panel(grey[tuple(take)], None, pixel_mm),
                  _panel(grey[tuple(take)], reference[tuple(take)], pixel_mm),
                  _panel(grey[tuple(take)], prediction[tuple(take)], pixel_mm)]
        height = max(p.shape[0] for p in panels)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
        rows.append(np.concatenate(padded, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)
