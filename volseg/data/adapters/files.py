"""File-name conventions shared by the adapters: NIfTI endings, pairing images with labels.

Several layouts keep images and labels in two folders and pair them by file name (a plain
``images/`` + ``labels/`` folder, HipMRI's ``semantic_MRs_anon/`` + ``semantic_labels_anon/``);
the pairing, and its error listing every unmatched file, is written once here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from volseg.io import Volume, VolumeReadError, read_channels, read_multichannel

# Longest first, so that "a.nii.gz" is "a" and not "a.nii".
NIFTI_ENDINGS = (".nii.gz", ".nii")
# Errors list at most this many file names; a whole folder of them helps nobody.
MAX_LISTED = 10


def strip_ending(name: str, endings: Sequence[str] = NIFTI_ENDINGS) -> str | None:
    """``name`` without the first of ``endings`` it ends with, or ``None`` if none."""
    for ending in endings:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def files_by_name(
    folder: Path, endings: Sequence[str] = NIFTI_ENDINGS,
    key: Callable[[str], str] = lambda stem: stem,
) -> dict[str, Path]:
    """Files in ``folder`` with one of ``endings``, keyed by ``key(name without ending)``.

    Hidden files are skipped: archives made on macOS carry ``._<name>`` resource forks beside
    every image (the Medical Segmentation Decathlon tarballs do).

    Raises:
        FileNotFoundError: ``folder`` is missing.
        ValueError: two files share a key (``a.nii`` beside ``a.nii.gz``).
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


def pair_by_name(
    images: dict[str, Path], labels: dict[str, Path]
) -> list[tuple[str, Path, Path]]:
    """``(name, image, label)`` for every name, sorted; every file must have its partner.

    Raises:
        ValueError: some files have no partner; the message lists them (up to `MAX_LISTED`
            per side), images without a label first.
    """
    problems = []
    for what, files, partners in (("no label for", images, labels),
                                  ("no image for", labels, images)):
        lonely = sorted(str(path) for name, path in files.items() if name not in partners)
        if lonely:
            more = len(lonely) - MAX_LISTED
            problems.append(f"{what} {', '.join(lonely[:MAX_LISTED])}"
                            + (f" and {more} more" if more > 0 else ""))
    if problems:
        raise ValueError("; ".join(problems))
    return [(name, images[name], labels[name]) for name in sorted(images)]


def find_file(folder: Path, stem: str, endings: Sequence[str] = NIFTI_ENDINGS) -> Path:
    """``folder/<stem><ending>`` for the first ending that exists.

    Raises:
        FileNotFoundError: none exists; the message names the first candidate.
    """
    for ending in endings:
        if (folder / f"{stem}{ending}").is_file():
            return folder / f"{stem}{ending}"
    raise FileNotFoundError(f"{folder / (stem + endings[0])}: missing")


def read_image_files(paths: Sequence[str | os.PathLike], channels: int | None = None) -> Volume:
    """A ``(C, x, y, z)`` image from one file per channel, or from one file with them all.

    A single file may be 3D (one channel) or a 4D NIfTI ``(x, y, z, C)``.

    Raises:
        VolumeReadError: a file is unreadable, or ``channels`` is given and differs from ``C``.
    """
    if len(paths) > 1:
        return read_channels(paths)
    image = read_multichannel(paths[0])
    if channels is not None and image.array.shape[0] != channels:
        raise VolumeReadError(
            f"{paths[0]}: {image.array.shape[0]} channel(s), expected {channels}"
        )
    return image
