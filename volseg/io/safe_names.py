"""Output files named after cases, kept inside their output folder whatever the case id is."""

from __future__ import annotations

import os
from pathlib import Path


class UnsafeNameError(ValueError):
    """A case id that is not one plain file name (a path, ``..``, empty)."""


def output_path(output_dir: str | os.PathLike, case_id: str, suffix: str = ".nii.gz") -> Path:
    """``<output_dir>/<case_id><suffix>``, refusing a case id that could leave ``output_dir``.

    Case ids come from file names, list files and dataset JSONs, which anyone can write; one
    of ``../../etc/x``, ``/abs/x`` or ``a/b`` would otherwise write outside the output folder.
    Refused rather than rewritten: two rewritten ids could name the same file.

    Raises:
        UnsafeNameError: ``case_id`` is empty, ``.`` or ``..``, holds a path separator or NUL,
            or starts with ``.`` (hidden, and the prefix of the writers' temporary files).
    """
    name = str(case_id)
    separators = {"/", "\\", "\0"} | {os.sep, os.altsep or "/"}
    if not name or name in (".", "..") or name.startswith(".") or any(
            s in name for s in separators):
        raise UnsafeNameError(f"case id {name!r} is not a plain file name; refusing to write "
                              f"it under {output_dir}")
    return Path(output_dir) / f"{name}{suffix}"
