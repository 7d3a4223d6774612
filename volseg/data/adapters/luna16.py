"""LUNA16 (LUng Nodule Analysis 2016; Setio et al., Med. Image Anal. 2017): CT scans and nodules.

```
<root>/subset0/<seriesuid>.mhd     MetaImage header, next to its <seriesuid>.raw voxel data
...
<root>/subset9/<seriesuid>.mhd
<root>/annotations.csv             seriesuid,coordX,coordY,coordZ,diameter_mm
```
LUNA16 annotates nodules, not voxels: each row is a nodule centre in world millimetres (the
scan's physical space, as SimpleITK's ``TransformPhysicalPointToIndex`` takes it) and a
diameter. The label map is made by drawing each nodule as a ball of that diameter, the usual
way to train a segmentation network on LUNA16. Scans without a nodule stay in the dataset as
all-background negatives, as they are in the challenge.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.adapters.files import MAX_LISTED
from volseg.io import Volume, VolumeReadError

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
# A MetaImage header is a few hundred bytes of "Key = Value" lines; enough to find the data file.
_HEADER_BYTES = 64 * 1024


def render_spheres(
    shape: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    spheres: Sequence[Sequence[float]],
) -> np.ndarray:
    """A uint8 ``(x, y, z)`` mask: 1 at voxel centres inside any sphere, else 0.

    Voxel ``i`` sits at world ``origin + direction @ (i * spacing)`` (ITK's convention, mm).
    Each sphere ``(x, y, z, diameter)`` (mm) is evaluated only over the index box that bounds
    it, so a 3 mm nodule in a 512x512x300 scan costs a few hundred voxels, not the scan. A
    sphere small enough to fall between voxel centres marks the voxel nearest its centre, so
    that no annotated nodule vanishes from the label.

    Raises:
        ValueError: a sphere lies outside the grid.
    """
    shape = np.asarray(shape, dtype=int)
    index_to_world = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    world_to_index = np.linalg.inv(index_to_world)
    origin = np.asarray(origin, float)
    # Half-width in voxels, per axis, of the box around a ball of radius 1 mm: a linear map A
    # takes the unit ball to an ellipsoid whose extent along axis k is the norm of A's row k.
    unit_half_width = np.linalg.norm(world_to_index, axis=1)
    mask = np.zeros(tuple(shape), np.uint8)
    for *centre, diameter in spheres:
        radius = diameter / 2
        centre_index = world_to_index @ (np.asarray(centre, float) - origin)
        # Rounded outwards: one voxel too many costs nothing, the distance test decides.
        low = np.maximum(np.floor(centre_index - radius * unit_half_width), 0).astype(int)
        high = np.minimum(np.ceil(centre_index + radius * unit_half_width), shape - 1).astype(int)
        nearest = np.round(centre_index).astype(int)
        if (low > high).any():
            raise ValueError(f"sphere at {tuple(centre)} mm lies outside the {tuple(shape)} grid")
        # Offsets from the centre in index units along each axis, broadcast to the box.
        offsets = [
            (np.arange(lo, hi + 1) - c).reshape([-1 if a == axis else 1 for a in range(3)])
            for axis, (lo, hi, c) in enumerate(zip(low, high, centre_index))
        ]
        world = [sum(index_to_world[k, j] * offsets[j] for j in range(3)) for k in range(3)]
        inside = world[0] ** 2 + world[1] ** 2 + world[2] ** 2 <= radius**2
        mask[low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1][inside] = 1
        if not inside.any():
            if (nearest < 0).any() or (nearest >= shape).any():
                raise ValueError(
                    f"sphere at {tuple(centre)} mm lies outside the {tuple(shape)} grid")
            mask[tuple(nearest)] = 1
    return mask


def read_annotations(path: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Nodules per series from LUNA16's ``annotations.csv``: ``(x, y, z, diameter)`` in mm.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a column is missing or a row is not numbers; the message names the line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (LUNA16 needs its annotations.csv)")
    nodules: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
        for row in reader:
            try:
                x, y, z, diameter = (float(row[c]) for c in COLUMNS[1:])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{reader.line_num}: not numbers: {row}") from None
            if not diameter > 0:
                raise ValueError(f"{path}:{reader.line_num}: diameter_mm must be > 0")
            nodules[row["seriesuid"]].append((x, y, z, diameter))
    return dict(nodules)


def _data_file(header: Path) -> Path | None:
    """The voxel file a MetaImage header points to, or ``None`` when it is not one file."""
    with header.open("rb") as file:
        text = file.read(_HEADER_BYTES).decode("latin-1")
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            value = value.strip()
            # LOCAL: voxels follow the header; LIST or a printf pattern: one file per slice.
            if value == "LOCAL" or value.startswith("LIST") or "%" in value:
                return None
            return header.parent / value
    raise VolumeReadError(f"{header}: no ElementDataFile line (not a MetaImage header)")


def _header_geometry(path: Path) -> tuple[tuple[int, ...], tuple, tuple, tuple]:
    """``(size, spacing, origin, direction)`` from the header alone, without the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        detail = [line for line in str(error).splitlines() if line.strip()][-1:]
        raise VolumeReadError(f"{path}: unreadable header ({' '.join(detail).strip()})") from None
    if reader.GetDimension() != 3:
        raise VolumeReadError(f"{path}: expected a 3D scan, got {reader.GetDimension()}D")
    return reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


class LUNA16Layout(DatasetLayout):
    """LUNA16 scans (``subset*/<seriesuid>.mhd``) with nodules drawn as balls as labels.

    Args:
        root: the LUNA16 folder, holding ``subset0`` ... ``subset9`` and the annotations.
        annotations: the nodule list, relative to ``root``.

    A row of the annotations naming a series with no scan under ``root`` is reported with a
    warning and skipped, not an error: LUNA16 ships as ten subsets and ``annotations.csv``
    covers all 888 scans, so working with a few subsets is common.
    """

    class_names = ["background", "nodule"]
    channel_names = ["CT"]

    def __init__(self, root: str | Path, annotations: str = "annotations.csv") -> None:
        super().__init__(root)
        self.annotations = self.root / annotations

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "annotations.csv").is_file() and any(root.glob("subset*/*.mhd"))

    def list_cases(self) -> list[Case]:
        scans: dict[str, Path] = {}
        for header in sorted(self.root.glob("subset*/*.mhd")):
            if header.stem in scans:
                raise ValueError(f"{header}: series {header.stem} also in {scans[header.stem]}")
            data = _data_file(header)
            if data is not None and not data.is_file():
                raise FileNotFoundError(f"{data}: missing voxel data for {header}")
            scans[header.stem] = header
        if not scans:
            raise FileNotFoundError(f"{self.root}: no subset*/*.mhd scans (LUNA16 layout)")
        nodules = read_annotations(self.annotations)
        unknown = sorted(set(nodules) - set(scans))
        if unknown:
            listed = ", ".join(unknown[:MAX_LISTED]) + (" ..." if len(unknown) > MAX_LISTED else "")
            warnings.warn(
                f"{self.annotations}: {len(unknown)} annotated series have no scan under "
                f"{self.root}/subset*/ and are skipped: {listed}",
                stacklevel=2,
            )
        return [
            Case(uid, (header,), self.annotations, extra={"nodules": tuple(nodules.get(uid, ()))})
            for uid, header in scans.items()
        ]

    def read_label(self, case: Case) -> Volume:
        """Nodule balls on the scan's grid; the header alone gives the grid."""
        size, spacing, origin, direction = _header_geometry(case.image_paths[0])
        try:
            mask = render_spheres(size, spacing, origin, direction, case.extra.get("nodules", ()))
        except ValueError as error:
            # A nodule off its scan means coordinates in another convention (voxels, RAS).
            raise ValueError(f"{self.annotations}: series {case.case_id}: {error}") from None
        return Volume(mask, spacing, origin, direction)
