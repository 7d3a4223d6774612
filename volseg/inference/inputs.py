"""What `volseg predict` reads: the cases under ``input=``, one prediction each, and their reading.

``input=`` is a volume file, a DICOM series folder, a folder, a list file, or any mix of them
(a list file names one file or folder per line). A folder holds:

- volume files: each is a case named after the file, except that nnU-Net channel names
  (``case_0000.nii.gz``, ``case_0001.nii.gz``) make one case ``case`` with two channels;
- sub-folders, each one case named after the folder (a *case folder*: KiTS23's
  ``case_00000/imaging.nii.gz`` is case ``case_00000``; a folder of several channel files is
  one multi-channel case, channels in file-name order) when it holds one image (or one set of
  nnU-Net channel files), when its files are all named after it (BraTS), or when its file names
  recur in a sibling folder (channel names, not case names); a sub-folder of other kinds holds
  cases of its own (a LUNA16 ``subset0/``, an nnU-Net ``imagesTr/``, KiTS23's ``dataset/``);
- DICOM series sub-folders, each one case named after the folder.

A folder given as ``input=`` is itself one case folder when its single image lies beside the
image's label file (``input=kits23/dataset/case_00000``) or when its files are all named after
it. Label files and folders are never read as images (`is_label`). Two cases that would be
written under one name are refused before any work (`check_unique_names`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from volseg.io import Volume, VolumeReadError, check_nifti, read_channels
from volseg.io.names import VOLUME_SUFFIXES, volume_stem

if TYPE_CHECKING:
    from volseg.data.datamodule import SegmentationDataModule

# A file with one of these suffixes lists one input path (file or folder) per line.
LIST_SUFFIXES = (".txt", ".lst")
_CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")
# Label files of the layouts volseg reads: KiTS23's segmentation.nii.gz, BraTS' *-seg/_seg,
# HipMRI's <name>_SEMANTIC_LFOV; and their label folders (nnU-Net/MSD, a NIfTI folder's labels/,
# HipMRI's, the LUNA16 lung masks).
_LABEL_FILE = re.compile(r"^segmentation$|[_-]seg$|_SEMANTIC(_|$)", re.IGNORECASE)
LABEL_FOLDERS = ("labelstr", "labelsts", "labels", "semantic_labels_anon", "seg-lungs-luna16")
# Files that sit beside images in the layouts (MetaImage data, annotations, metadata): not DICOM.
_NOT_DICOM = (".raw", ".zraw", ".csv", ".json", ".md", ".yaml", ".yml", ".png", ".jpg", ".pkl",
              ".npy", ".npz", ".log", ".db")


@dataclass
class InputCase:
    """One case to predict: its name, its files, and how to read it.

    Attributes:
        case_id: the output's name, ``<case_id>.nii.gz``.
        paths: one file per channel, or one DICOM series folder.
        reader: reads the image (a dataset layout's reader); ``None`` reads ``paths``.
        label_reader: reads the reference labels, when the case comes from a dataset with them
            (its layout's reader: label remaps such as KiTS23's cysts are applied).
    """

    case_id: str
    paths: list[Path] = field(default_factory=list)
    reader: Callable[[], Volume] | None = None
    label_reader: Callable[[], Volume] | None = None

    @property
    def source(self) -> str:
        """The files, as error messages name them."""
        return ", ".join(str(p) for p in self.paths)


def is_label(path: Path) -> bool:
    """Whether ``path`` is a label file or label folder by its layout's naming."""
    if path.is_dir():
        return path.name.lower() in LABEL_FOLDERS
    stem = volume_stem(path)
    return stem is not None and bool(_LABEL_FILE.search(stem))


def _could_be_dicom(path: Path) -> bool:
    """A file GDCM should look at: ``.dcm`` or any name but a volume, list or known other file."""
    name = path.name.lower()
    return (path.is_file() and not name.startswith(".") and volume_stem(path) is None
            and not name.endswith(LIST_SUFFIXES) and not name.endswith(_NOT_DICOM))


def dicom_series(folder: Path) -> list[str]:
    """The DICOM series IDs of the files directly inside ``folder`` (empty if none)."""
    # GDCM prints a "No Series were found" warning for a folder of NIfTI files: only ask it
    # when some file could be DICOM.
    if not any(_could_be_dicom(p) for p in folder.iterdir()):
        return []
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def find_inputs(source: str | Path) -> list[InputCase]:
    """The cases in ``source``: a volume file, a folder of any kind, or a list file.

    Raises:
        FileNotFoundError: ``source`` (or a listed path) does not exist, or holds no images.
        ValueError: ``source`` is a label file, or two cases would be written under one name
            (the message names both).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder (input)")
    if source.is_file() and source.name.lower().endswith(LIST_SUFFIXES):
        entries = _read_list(source)
        cases = _name_files([p for p in entries if p.is_file()])
        for folder in (p for p in entries if p.is_dir()):
            cases += _folder_cases(folder)
    elif source.is_file():
        cases = _name_files([source])
    else:
        cases = _folder_cases(source)
    if not cases:
        raise FileNotFoundError(
            f"{source}: no images: volume files ({', '.join(VOLUME_SUFFIXES)}), case folders "
            "or DICOM series folders (label files are skipped)")
    check_unique_names(cases)
    return cases


def check_unique_names(cases: Iterable[InputCase]) -> None:
    """Refuse two cases that would write one output file, naming both sources.

    Names are compared without case: on macOS and Windows ``Case1`` and ``case1`` are one file.

    Raises:
        ValueError: the first clash found.
    """
    seen: dict[str, InputCase] = {}
    for case in cases:
        other = seen.setdefault(case.case_id.lower(), case)
        if other is not case:
            raise ValueError(
                f"two inputs would both be written as {case.case_id}.nii.gz: {other.source} "
                f"and {case.source}; predict them into separate output folders")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and volume_stem(p)
                  and not p.name.startswith(".") and not is_label(p))


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not is_label(p))


def _channel_groups(files: Sequence[Path]) -> dict[str, list[Path]]:
    """Files grouped by nnU-Net channel naming: ``a_0000``, ``a_0001`` -> ``{"a": [...]}``."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        stem = volume_stem(path) or path.name
        match = _CHANNEL_SUFFIX.search(stem)
        groups.setdefault(stem[: match.start()] if match else stem, []).append(path)
    return groups


def _named_after(folder: Path, files: Sequence[Path]) -> bool:
    """Every file's name starts with the folder's (BraTS: ``X/X-t1c.nii.gz``, ``X/X-t2w...``)."""
    return len(files) > 1 and all(p.name.startswith(folder.name) for p in files)


def _folder_cases(folder: Path) -> list[InputCase]:
    """The cases of a folder given as ``input=`` (see the module docstring)."""
    if dicom_series(folder):
        return [InputCase(folder.name, [folder])]
    files = _image_files(folder)
    groups = _channel_groups(files)
    beside_label = any(is_label(p) for p in folder.iterdir() if p.is_file())
    if (len(groups) == 1 and beside_label) or _named_after(folder, files):
        return [InputCase(folder.name, files)]
    cases = [InputCase(name, paths) for name, paths in groups.items()]
    return sorted(cases + _sub_folder_cases(folder), key=lambda case: case.case_id)


def _sub_folder_cases(folder: Path) -> list[InputCase]:
    """The cases of ``folder``'s sub-folders: case folders, DICOM series, folders of cases."""
    subs = _sub_folders(folder)
    names = {sub: frozenset(_channel_groups(_image_files(sub))) for sub in subs}
    cases: list[InputCase] = []
    for sub in subs:
        files = _image_files(sub)
        if not files:
            if dicom_series(sub):
                cases.append(InputCase(sub.name, [sub]))
            else:  # a folder of case folders (KiTS23's dataset/), or nothing
                cases += _sub_folder_cases(sub)
            continue
        recurring = any(names[other] == names[sub] for other in subs if other != sub)
        if len(names[sub]) == 1 or _named_after(sub, files) or recurring:
            cases.append(InputCase(sub.name, files))
        else:  # a folder of cases: LUNA16's subset0/, nnU-Net's imagesTr/
            cases += _folder_cases(sub)
    return cases


def _name_files(files: Sequence[Path]) -> list[InputCase]:
    """Cases of listed files: nnU-Net channel files of one folder form one case; a file name
    that recurs in several folders (``case_00000/imaging.nii.gz``, ...) names the case after
    its folder instead.

    Raises:
        ValueError: a listed file is a label file.
    """
    labels = [str(p) for p in files if is_label(p)]
    if labels:
        raise ValueError(f"{labels[0]}: a label file, not an image; input= takes images")
    grouped: dict[tuple[Path, str], list[Path]] = {}
    for path in files:
        for name, paths in _channel_groups([path]).items():
            grouped.setdefault((path.parent, name), []).extend(paths)
    folders_per_name: dict[str, set[Path]] = {}
    for parent, name in grouped:
        folders_per_name.setdefault(name, set()).add(parent)
    return [InputCase(parent.name if len(folders_per_name[name]) > 1 else name, paths)
            for (parent, name), paths in grouped.items()]


SPLITS = ("test", "val", "train", "all")


def dataset_cases(datamodule: SegmentationDataModule, split: str) -> list[InputCase]:
    """The cases of a data config's ``split``, read through its layout adapter.

    ``all`` is every case the layout lists; ``train``, ``val`` and ``test`` are those of the
    dataset's ``splits.json`` (and ``data.fold``), made as training makes it when missing.
    Images and labels are read by the layout, as in training: LUNA16's nodules drawn from
    ``annotations.csv``, KiTS23's cysts merged into background when ``drop_cyst`` is set.

    Raises:
        ValueError: ``split`` is not one of `SPLITS`, or that split holds no case.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    datamodule.layout.prepare()  # the built-in synthetic data is generated on first use
    if split == "all":
        cases = datamodule.cases()
    else:
        settings = datamodule.split_settings
        if settings["stratify"] and not Path(settings["file"]).is_file():
            datamodule.prepare_data()  # a stratified split reads each case's classes
        datamodule.setup()
        if not datamodule.split[split]:
            raise ValueError(f"split={split}: {settings['file']} has no {split} cases "
                             f"(data.split.{split}={settings.get(split)}); try another split")
        by_id = {case.case_id: case for case in datamodule.cases()}
        cases = [by_id[case_id] for case_id in datamodule.split[split]]
    layout = datamodule.layout
    return [InputCase(case.case_id, list(case.image_paths),
                      reader=functools.partial(layout.read_image, case),
                      label_reader=(functools.partial(layout.read_label, case)
                                    if case.label_path is not None else None))
            for case in cases]


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
    if case.reader is not None:
        return case.reader()
    if len(case.paths) == 1 and case.paths[0].is_dir():
        return read_dicom_series(case.paths[0])
    for path in case.paths:
        # SimpleITK zero-fills a truncated NIfTI and reads NaN as 0: a wrong prediction, not
        # an error, unless checked first.
        check_nifti(path)
    return read_channels(case.paths)
