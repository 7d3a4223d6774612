"""Volumes with their geometry, read and written through SimpleITK.

Axis convention used everywhere in volseg: arrays are indexed ``(x, y, z)`` (channel first for
images: ``(C, x, y, z)``), the order of the image file's own voxel axes, as nibabel and MONAI
index them. ``spacing``, ``origin`` and ``direction`` use the same ``(x, y, z)`` order, as in
the file header and in SimpleITK. SimpleITK hands out ``(z, y, x)`` arrays; the transpose
happens here and nowhere else.

SimpleITK reads a truncated NIfTI file with zeros for the missing voxels, and NaN/inf voxels
as 0: `nifti_findings` reads the file itself to catch both, and `check_nifti` turns them into
a `VolumeReadError` for readers that refuse a file outright.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import nibabel
import numpy as np
import SimpleITK as sitk

from volseg.io.atomic import atomic_path

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Geometry tolerance when comparing an image with its label or its other channels (mm, and
# unitless for direction cosines): headers written by different tools round differently.
GEOMETRY_TOLERANCE = 1e-3


class VolumeReadError(ValueError):
    """A file could not be read as a 3D volume; the message names the file."""


@dataclass
class Volume:
    """An array with the geometry that places it in patient space.

    Attributes:
        array: ``(x, y, z)`` for a label map or single channel, ``(C, x, y, z)`` for images.
        spacing: voxel size along x, y, z in mm.
        origin: world position of voxel ``(0, 0, 0)`` in mm.
        direction: 3x3 direction cosines, row-major as SimpleITK gives them; column ``j`` is
            the world direction of array axis ``j``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=IDENTITY_DIRECTION)

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be 3D or channel-first 4D, got {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[-3:])

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry around another array of the same spatial shape."""
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(f"shape {array.shape} does not fit geometry {self.spatial_shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def geometry(self) -> dict:
        """Plain-data geometry, JSON-serialisable."""
        return {
            "shape": list(self.spatial_shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    def geometry_mismatch(self, other: Volume, tolerance: float = GEOMETRY_TOLERANCE) -> str | None:
        """Describe how ``other``'s grid differs from this one, or ``None`` when they agree."""
        if other.spatial_shape != self.spatial_shape:
            return f"shape {other.spatial_shape} != {self.spatial_shape}"
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if not np.allclose(a, b, atol=tolerance, rtol=0):
                # .tolist(): plain floats, not numpy 2's "np.float64(2.0)" reprs.
                return (f"{name} {tuple(b.round(4).tolist())} != {tuple(a.round(4).tolist())} "
                        f"(tolerance {tolerance:g})")
        return None

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image (3D arrays only; write channels as separate files)."""
        if self.array.ndim != 3:
            raise ValueError("to_sitk needs a 3D array; split channels first")
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array.transpose(2, 1, 0)))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"expected a 3D scalar image, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)"
            )
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        return cls(np.ascontiguousarray(array), image.GetSpacing(), image.GetOrigin(),
                   image.GetDirection())


def _read_sitk(path: Path) -> sitk.Image:
    """SimpleITK's image of ``path``, with its errors as one line naming the file."""
    if not path.is_file():
        raise VolumeReadError(f"{path}: no such file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        # SimpleITK's message is a multi-line ITK trace; keep its last meaningful line.
        detail = [line for line in str(error).splitlines() if line.strip()][-1:]
        raise VolumeReadError(f"{path}: unreadable image ({' '.join(detail).strip()})") from None


def read_volume(path: str | os.PathLike) -> Volume:
    """Read one 3D image (NIfTI, MetaImage, NRRD, ... anything SimpleITK reads).

    Raises:
        VolumeReadError: the file is missing, unreadable or not a 3D scalar image.
    """
    path = Path(path)
    image = _read_sitk(path)
    try:
        return Volume.from_sitk(image)
    except ValueError as error:
        raise VolumeReadError(f"{path}: {error}") from None


def read_channels(paths: Sequence[str | os.PathLike]) -> Volume:
    """Read one file per channel into a ``(C, x, y, z)`` image on the first file's grid.

    Raises:
        VolumeReadError: a file is unreadable or its grid differs from the first channel's.
    """
    volumes = [read_volume(p) for p in paths]
    first = volumes[0]
    for path, volume in zip(paths[1:], volumes[1:]):
        mismatch = first.geometry_mismatch(volume)
        if mismatch:
            raise VolumeReadError(f"{path}: channel grid differs from {paths[0]}: {mismatch}")
    stacked = np.stack([v.array.astype(np.float32, copy=False) for v in volumes])
    return first.with_array(stacked)


def read_multichannel(path: str | os.PathLike) -> Volume:
    """Read one file holding every channel into a float32 ``(C, x, y, z)`` image.

    For images stored as one 4D NIfTI ``(x, y, z, C)``, as the Medical Segmentation Decathlon
    ships its multi-modal tasks (BraTS: FLAIR, T1w, T1gd, T2w). SimpleITK reads such a file as
    a 4D scalar image, or as a 3D vector image when the header has the vector intent (or a 5D
    ``(x, y, z, 1, C)`` one); all read the same here. A plain 3D file gives ``C = 1``.
    Geometry is the first three axes' spacing, origin and direction, exactly as `read_volume`
    gives them for a 3D file.

    Raises:
        VolumeReadError: the file is missing, unreadable or not a 3D image with channels.
    """
    path = Path(path)
    image = _read_sitk(path)
    size, dim = image.GetSize(), image.GetDimension()
    components = image.GetNumberOfComponentsPerPixel()
    # Axes past the third hold the channels: (C,) in 4D, (1, C) in the 5D vector layout.
    vector = dim == 3 and components > 1
    scalar_channels = dim in (3, 4, 5) and components == 1 and sum(n > 1 for n in size[3:]) <= 1
    if not (vector or scalar_channels):
        raise VolumeReadError(
            f"{path}: expected a 3D image with channels, got size {size} with "
            f"{components} component(s) per voxel"
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x, C) if vector, else (..., z, y, x)
    if vector:
        array = array.transpose(3, 2, 1, 0)
    else:
        array = array.reshape((-1, *array.shape[-3:])).transpose(0, 3, 2, 1)
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)[:3, :3]
    return Volume(
        np.ascontiguousarray(array, dtype=np.float32),
        image.GetSpacing()[:3], image.GetOrigin()[:3], tuple(direction.ravel()),
    )


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write a 3D volume atomically: a temporary file in the same folder, then a rename.

    A reader (or a crash) never sees a half-written file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=compress)
    return path


def nifti_findings(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Problems of a NIfTI file that SimpleITK reads without a word, as ``(kind, message)``.

    SimpleITK (ITK 5.4) reads a truncated ``.nii``/``.nii.gz`` and fills the missing voxels
    with zeros, and turns NaN and inf voxels into 0. So the header is read here, the stored
    data length compared with what it promises (for ``.nii.gz`` through the uncompressed size
    in the gzip trailer, a few bytes; the whole stream is decompressed only when that
    disagrees, as it does for multi-member files such as bgzip writes), and floating-point data
    is scanned for NaN/inf in one streaming pass. Other formats, and files whose start is not a
    NIfTI header, give ``[]`` (SimpleITK reports those).
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return []
    compressed = name.endswith(".gz")
    try:
        with _open_nifti(path, compressed) as stream:
            start = stream.read(_NIFTI2_HEADER_BYTES)
        header = _nifti_header(start)
    except gzip.BadGzipFile:
        return []  # not gzip at all, so no NIfTI either: SimpleITK says what it is
    except (OSError, EOFError, zlib.error) as error:
        return [("unreadable", f"{path}: damaged or truncated gzip stream ({error})")]
    except ValueError as error:
        return [("unreadable", f"{path}: {error}")]
    if header is None:
        return []
    offset = int(header.get_data_offset())
    dtype = header.get_data_dtype()
    expected = offset + int(np.prod(header.get_data_shape(), dtype=np.int64)) * dtype.itemsize
    findings = []
    non_finite = 0
    try:
        if dtype.kind == "f":
            size, non_finite = _scan_floats(path, compressed, offset, dtype)
        else:
            size = _stored_length(path, compressed, expected)
    except (OSError, EOFError, zlib.error) as error:
        return [("unreadable", f"{path}: damaged or truncated gzip stream ({error})")]
    if size < expected:
        findings.append(("unreadable", f"{path}: truncated: {size} bytes where its NIfTI "
                                       f"header needs {expected}"))
    if non_finite:
        findings.append(("non-finite", f"{path}: {non_finite} NaN/inf voxel(s) (SimpleITK "
                                       "would read them as 0)"))
    return findings


def check_nifti(path: str | os.PathLike) -> None:
    """Refuse a NIfTI file that SimpleITK would read wrongly (truncated, NaN/inf voxels).

    For readers that have no problem list to add `nifti_findings` to, such as ``volseg predict``.

    Raises:
        VolumeReadError: the first finding, one line naming the file.
    """
    findings = nifti_findings(path)
    if findings:
        raise VolumeReadError(findings[0][1])


_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES = 348, 540
# Bytes decompressed and scanned at a time: bounded memory for any volume size.
_SCAN_CHUNK = 1 << 24


def _open_nifti(path: Path, compressed: bool) -> BinaryIO:
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _nifti_header(start: bytes) -> nibabel.Nifti1Header | None:
    """The NIfTI-1 or -2 header at the start of a file, or ``None`` if it does not start one.

    Raises:
        ValueError: the file is shorter than the header it starts.
    """
    for order in "<>":
        if len(start) < 4:
            return None
        size = struct.unpack(f"{order}i", start[:4])[0]
        if size in (_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES):
            if len(start) < size:
                raise ValueError(f"truncated: {len(start)} bytes, shorter than its NIfTI header")
            kind = nibabel.Nifti1Header if size == _NIFTI1_HEADER_BYTES else nibabel.Nifti2Header
            try:
                return kind.from_fileobj(io.BytesIO(start[:size]))
            except Exception:  # noqa: BLE001 - not a valid header: SimpleITK gets to say why
                return None
    return None


def _stored_length(path: Path, compressed: bool, expected: int) -> int:
    """Bytes of the (uncompressed) file, or ``expected`` when the gzip trailer agrees."""
    if not compressed:
        return path.stat().st_size
    with path.open("rb") as file:
        file.seek(-4, os.SEEK_END)
        (trailer,) = struct.unpack("<I", file.read(4))
    if trailer == expected % 2**32:
        return expected
    length = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            length += len(chunk)
    return length


def _scan_floats(path: Path, compressed: bool, offset: int, dtype: np.dtype) -> tuple[int, int]:
    """(bytes in the file, NaN/inf voxels after ``offset``), reading it once in chunks."""
    length = bad = 0
    pending = b""
    with _open_nifti(path, compressed) as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            data_start = max(offset - length, 0)
            length += len(chunk)
            pending += chunk[data_start:] if data_start < len(chunk) else b""
            usable = len(pending) - len(pending) % dtype.itemsize
            values = np.frombuffer(pending[:usable], dtype=dtype)
            bad += values.size - int(np.count_nonzero(np.isfinite(values)))
            pending = pending[usable:]
    return length, bad
