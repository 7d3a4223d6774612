"""Datasets on disk to training batches: adapters, preprocessing, cache, splits, sampling.

The names below are imported on first use: `SegmentationDataModule` pulls in Lightning, which
the cache's worker processes (they import this package) do not need.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SegmentationDataModule": "volseg.data.datamodule",
    "Preprocessor": "volseg.data.preprocess",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
