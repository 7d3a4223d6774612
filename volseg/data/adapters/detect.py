"""Which layout a dataset folder has: for ``gt=<dataset root>`` in ``volseg evaluate``.

Each adapter says whether a folder has its structure (`DatasetLayout.recognises`); this module
only asks them in turn. The first that answers yes reads the folder with its default settings,
those of its ``conf/data`` config (KiTS23's cysts merged into background, for one).
"""

from __future__ import annotations

from pathlib import Path

from volseg.data.adapters.base import DatasetLayout
from volseg.data.adapters.decathlon import DecathlonLayout
from volseg.data.adapters.hipmri import HipMRILayout
from volseg.data.adapters.kits23 import KiTS23Layout
from volseg.data.adapters.luna16 import LUNA16Layout
from volseg.data.adapters.nifti_folder import NiftiFolderLayout

LAYOUTS: tuple[type[DatasetLayout], ...] = (
    DecathlonLayout, KiTS23Layout, LUNA16Layout, HipMRILayout, NiftiFolderLayout)


def detect_layout(root: str | Path) -> DatasetLayout | None:
    """The layout adapter for ``root`` (default settings), or ``None`` if none recognises it."""
    root = Path(root)
    for layout in LAYOUTS:
        if layout.recognises(root):
            return layout(root)
    return None
