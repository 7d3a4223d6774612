"""Preprocess each case once and keep it as memory-mappable arrays.

Layout of a cache folder (one per preprocessing setting, keyed by a hash of it)::

    <cache_dir>/<key>/<case>.image.npy      float32 (C, x, y, z), preprocessed
    <cache_dir>/<key>/<case>.label.npy      uint8 (x, y, z), on the same grid
    <cache_dir>/<key>/<case>.locations.npz  sampled voxel indices per foreground class
    <cache_dir>/<key>/<case>.json           geometry before/after, source fingerprint

The JSON is written last and atomically: a case counts as cached only when it exists and its
source fingerprint (path, size, mtime of every input file) matches, so an interrupted build or
an edited source file is simply redone. Arrays are opened with ``mmap_mode="r"``: training RAM
does not grow with the dataset, only with the patches in flight.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from volseg.atomic import atomic_path, write_json
from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.preprocess import Preprocessor

# Foreground voxels kept per class for oversampling: enough to cover a lesion's extent,
# small enough that the index file stays a few hundred kB even for a whole-organ class.
MAX_LOCATIONS_PER_CLASS = 20_000
CACHE_VERSION = 1


class CaseCache:
    """Preprocessed cases of one dataset under one preprocessing setting.

    Args:
        cache_dir: the dataset's cache folder; a subfolder per preprocessing setting is made.
        layout: the dataset adapter that reads original cases.
        preprocessor: the preprocessing to apply.
        num_classes: labels must lie in ``[0, num_classes)``, else building fails naming the file.
    """

    def __init__(
        self, cache_dir: str | Path, layout: DatasetLayout, preprocessor: Preprocessor,
        num_classes: int,
    ) -> None:
        settings = {"version": CACHE_VERSION, **preprocessor.to_dict()}
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.folder = Path(cache_dir) / key
        self.layout = layout
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self._settings = settings

    def _path(self, case_id: str, kind: str) -> Path:
        return self.folder / f"{case_id}.{kind}"

    def is_cached(self, case: Case) -> bool:
        meta = self._path(case.case_id, "json")
        if not meta.is_file():
            return False
        return json.loads(meta.read_text()).get("source") == _fingerprint(case)

    def build(
        self, cases: Sequence[Case], progress: Callable[[str], None] | None = None
    ) -> None:
        """Preprocess every case that is not cached yet (or whose source changed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self._settings, self.folder / "preprocessing.json")
        for case in cases:
            if not self.is_cached(case):
                if progress is not None:
                    progress(case.case_id)
                self._build_case(case)

    def _build_case(self, case: Case) -> None:
        image = self.layout.read_image(case)
        label = self.layout.read_label(case)
        label_file = case.label_path or case.case_id
        mismatch = image.geometry_mismatch(label)
        if mismatch:
            raise ValueError(f"{label_file}: label grid differs from its image: {mismatch}")
        if not np.isfinite(image.array).all():
            raise ValueError(f"{case.image_paths[0]}: image contains NaN or inf voxels")
        values = np.unique(label.array)
        if values.min() < 0 or values.max() >= self.num_classes:
            raise ValueError(
                f"{label_file}: label values {values.tolist()} outside 0..{self.num_classes - 1} "
                f"(data.num_classes={self.num_classes})"
            )
        pre_image = self.preprocessor.image(image)
        pre_label = self.preprocessor.label(label)
        with atomic_path(self._path(case.case_id, "image.npy")) as tmp:
            np.save(tmp, pre_image.array.astype(np.float32, copy=False))
        with atomic_path(self._path(case.case_id, "label.npy")) as tmp:
            np.save(tmp, pre_label.array)
        locations = _class_locations(pre_label.array, self.num_classes, seed=case.case_id)
        with atomic_path(self._path(case.case_id, "locations.npz")) as tmp:
            np.savez(tmp, **{str(c): idx for c, idx in locations.items()})
        counts = np.bincount(pre_label.array.ravel(), minlength=self.num_classes)
        write_json(
            {
                "case_id": case.case_id,
                "source": _fingerprint(case),
                "original": image.geometry(),
                "preprocessed": pre_image.geometry(),
                "class_voxels": counts.tolist(),
            },
            self._path(case.case_id, "json"),
        )

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """Memory-mapped ``(image, label)`` arrays and the case's metadata."""
        image = np.load(self._path(case_id, "image.npy"), mmap_mode="r")
        label = np.load(self._path(case_id, "label.npy"), mmap_mode="r")
        meta = json.loads(self._path(case_id, "json").read_text())
        return image, label, meta

    def locations(self, case_id: str) -> dict[int, np.ndarray]:
        """Flat voxel indices (into the preprocessed label) per foreground class present."""
        with np.load(self._path(case_id, "locations.npz")) as data:
            return {int(c): data[c] for c in data.files}


def _fingerprint(case: Case) -> list:
    files = [*case.image_paths, *([case.label_path] if case.label_path else [])]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in map(Path, files)]


def _class_locations(label: np.ndarray, num_classes: int, seed: str) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(int(hashlib.sha1(seed.encode()).hexdigest()[:8], 16))
    flat = label.ravel()
    locations = {}
    for c in range(1, num_classes):
        indices = np.flatnonzero(flat == c)
        if indices.size > MAX_LOCATIONS_PER_CLASS:
            indices = np.sort(rng.choice(indices, MAX_LOCATIONS_PER_CLASS, replace=False))
        if indices.size:
            locations[c] = indices
    return locations
