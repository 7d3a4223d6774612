"""What `volseg predict` reads: cases found in a file, a folder or a list file, and their reading.

A case is one volume file, several files in nnU-Net's channel naming (``case_0000.nii.gz``,
``case_0001.nii.gz`` -> case ``case`` with two channels), or a folder holding one DICOM series
(read with SimpleITK's ``ImageSeriesReader``, slices ordered by GDCM from their positions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from volseg.io import Volume, VolumeReadError, check_nifti, read_channels

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
# A file with one of these suffixes lists one input path (file or DICOM folder) per line.
LIST_SUFFIXES = (".txt", ".lst")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")


@dataclass
class InputCase:
    """A volume to predict: its name and one file per channel, or one DICOM series folder."""

    case_id: str
    paths: list[Path] = field(default_factory=list)


def volume_stem(path: Path) -> str | None:
    """The file name without its volume suffix, or ``None`` if it is not a volume file."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def dicom_series(folder: Path) -> list[str]:
    """The DICOM series IDs of the files directly inside ``folder`` (empty if none)."""
    # GDCM prints a "No Series were found" warning for a folder of NIfTI files: only ask it
    # when some file could be DICOM (``.dcm`` or any name that is not a volume or list file).
    if not any(p.is_file() and not volume_stem(p) and not p.name.lower().endswith(LIST_SUFFIXES)
               for p in folder.iterdir()):
        return []
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def find_inputs(source: str | Path) -> list[InputCase]:
    """Cases in a volume file, a DICOM series folder, a folder, or a list file.

    A folder's volume files are grouped by nnU-Net channel naming; each of its sub-folders that
    holds a DICOM series is one case named after the sub-folder. A list file (``.txt``,
    ``.lst``) names one file or DICOM folder per line (blank lines and ``#`` comments skipped;
    relative paths are relative to the list file).

    Raises:
        FileNotFoundError: ``source`` (or a listed path) does not exist, or holds no volumes.
    """
    source = Path(source)
    if source.is_file() and source.name.lower().endswith(LIST_SUFFIXES):
        entries = _read_list(source)
    elif source.is_file() or (source.is_dir() and dicom_series(source)):
        entries = [source]
    elif source.is_dir():
        entries = sorted(p for p in source.iterdir() if (p.is_file() and volume_stem(p))
                         or (p.is_dir() and dicom_series(p)))
    else:
        raise FileNotFoundError(f"{source}: no such file or folder (input)")
    cases: dict[str, InputCase] = {}
    for path in entries:
        stem = path.name if path.is_dir() else volume_stem(path)
        if stem is None:
            # Kept as a case so that it fails with a clear message and the others still run.
            stem = path.name
        match = _CHANNEL_SUFFIX.search(stem) if path.is_file() else None
        case_id = stem[: match.start()] if match else stem
        cases.setdefault(case_id, InputCase(case_id)).paths.append(path)
    if not cases:
        raise FileNotFoundError(f"{source}: no volume files ({', '.join(VOLUME_SUFFIXES)}) "
                                "or DICOM series folders")
    return list(cases.values())


def _read_list(list_file: Path) -> list[Path]:
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line)
        path = path if path.is_absolute() else list_file.parent / path
        if not path.exists():
            raise FileNotFoundError(f"{list_file}: listed path {path} does not exist")
        paths.append(path)
    return paths


def read_dicom_series(folder: Path) -> Volume:
    """Read the one DICOM series in ``folder`` as a 3D volume.

    Raises:
        VolumeReadError: no series, several series (ambiguous), or an unreadable one.
    """
    series = dicom_series(folder)
    if len(series) != 1:
        raise VolumeReadError(f"{folder}: expected one DICOM series, found {len(series)}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        detail = [line for line in str(error).splitlines() if line.strip()][-1:]
        raise VolumeReadError(f"{folder}: unreadable DICOM series ({' '.join(detail)})") from None
    try:
        return Volume.from_sitk(image)
    except ValueError as error:
        raise VolumeReadError(f"{folder}: {error}") from None


def read_case(case: InputCase) -> Volume:
    """The ``(C, x, y, z)`` or ``(x, y, z)`` image of ``case``.

    Raises:
        VolumeReadError: a file is unreadable, truncated, holds NaN/inf voxels, is not 3D, or
            the channels' grids differ.
    """
    if len(case.paths) == 1 and case.paths[0].is_dir():
        return read_dicom_series(case.paths[0])
    for path in case.paths:
        # SimpleITK zero-fills a truncated NIfTI and reads NaN as 0: a wrong prediction, not
        # an error, unless checked first.
        check_nifti(path)
    return read_channels(case.paths)
