"""What a volume file is called: its endings, and a case's name from its file name.

One set of rules for every reader: `volseg predict`'s inputs (`volseg.inference.inputs`), the
dataset layouts (`volseg.data.adapters`) and `volseg evaluate`'s folders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

# Longest first, so that "a.nii.gz" is "a" and not "a.nii".
NIFTI_ENDINGS = (".nii.gz", ".nii")
VOLUME_SUFFIXES = (*NIFTI_ENDINGS, ".mha", ".mhd", ".nrrd", ".nhdr")


def strip_ending(name: str, endings: Sequence[str] = NIFTI_ENDINGS) -> str | None:
    """``name`` without the first of ``endings`` it ends with (in any letter case), or
    ``None`` if it ends with none of them or is nothing but the ending."""
    lower = name.lower()
    for ending in endings:
        if lower.endswith(ending.lower()) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def volume_stem(path: Path) -> str | None:
    """The file name without its volume suffix, or ``None`` if it is not a volume file."""
    return strip_ending(path.name, VOLUME_SUFFIXES)


def files_by_name(
    folder: Path, endings: Sequence[str] = NIFTI_ENDINGS,
    key: Callable[[str], str] = lambda stem: stem,
) -> dict[str, Path]:
    """Files in ``folder`` with one of ``endings``, keyed by ``key(name without ending)``.

    Hidden files are skipped: archives made on macOS carry ``._<name>`` resource forks beside
    every image (the Medical Segmentation Decathlon tarballs do).

    Raises:
        FileNotFoundError: ``folder`` is missing.
        ValueError: two files share a key (``a.nii`` beside ``a.nii.gz``): which one is the
            case would be a guess.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = strip_ending(path.name, endings)
        if stem is None or path.name.startswith(".") or not path.is_file():
            continue
        name = key(stem)
        if name in found:
            raise ValueError(f"{path}: same case name {name!r} as {found[name].name}")
        found[name] = path
    return found


def volume_files(folder: Path) -> dict[str, Path]:
    """The volume files directly in ``folder`` (any of `VOLUME_SUFFIXES`) by case name."""
    return files_by_name(folder, VOLUME_SUFFIXES)
