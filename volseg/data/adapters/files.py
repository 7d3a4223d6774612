"""Files shared by the adapters: pairing images with labels, finding and reading them (what a
volume file is called is `volseg.io.names`).

Several layouts keep images and labels in two folders and pair them by file name (a plain
``images/`` + ``labels/`` folder, HipMRI's ``semantic_MRs_anon/`` + ``semantic_labels_anon/``);
the pairing, and its error listing every unmatched file, is written once here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from volseg.io import Volume, VolumeReadError, read_channels, read_multichannel
from volseg.io.names import NIFTI_ENDINGS

# Errors list at most this many file names; a whole folder of them helps nobody.
MAX_LISTED = 10


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
