"""File I/O: volumes and their geometry, volume file names, atomic writes, overlay pictures.

- `volseg.io.volume`: `Volume` and reading/writing it (``from volseg.io import Volume`` works);
- `volseg.io.names`: what a volume file is called, and a case's name from it;
- `volseg.io.atomic`: files that are complete or absent, never half-written;
- `volseg.io.safe_names`: output files named after cases, kept inside their folder;
- `volseg.io.overlay`: PNG pictures of an image with its label maps.

The volume names are loaded on first use: run-folder code imports `volseg.io.atomic`, and
``import volseg`` must not pull in SimpleITK and nibabel with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_VOLUME_NAMES = ("GEOMETRY_TOLERANCE", "IDENTITY_DIRECTION", "Volume", "VolumeReadError",
                 "check_nifti", "nifti_findings", "read_channels", "read_multichannel",
                 "read_volume", "write_volume")


def __getattr__(name: str) -> Any:
    if name in _VOLUME_NAMES:
        return getattr(importlib.import_module("volseg.io.volume"), name)
    raise AttributeError(f"module 'volseg.io' has no attribute {name!r}")


__all__ = list(_VOLUME_NAMES)
