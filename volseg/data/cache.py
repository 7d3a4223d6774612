"""Check and preprocess each case once, and keep it as memory-mappable arrays.

Under ``data.cache_dir`` each dataset has a folder of its own, ``<dataset>`` below
(`dataset_cache_dir`: the root folder's name and a hash of its resolved path), so datasets
sharing a cache_dir (two Decathlon tasks) share no file. It holds the dataset fingerprint
(`volseg.data.fingerprint`) and a folder per preprocessing setting, keyed by a hash of it::

    <cache_dir>/<dataset>/fingerprint.json             the plan's dataset fingerprint
    <cache_dir>/<dataset>/<key>/preprocessing.json     the setting
    <cache_dir>/<dataset>/<key>/<case>.image.npy       float32 (C, x, y, z), preprocessed
    <cache_dir>/<dataset>/<key>/<case>.label.npy       uint8 (x, y, z), on the same grid
    <cache_dir>/<dataset>/<key>/<case>.locations.npy   sampled voxel indices of the foreground
                                                       classes
    <cache_dir>/<dataset>/<key>/<case>.json            geometry before/after, the preprocessing
                                                       `Trace`, class voxel counts, source
                                                       fingerprint
    <cache_dir>/<dataset>/<key>/<case>.problems.json   instead of the above: why the case is
                                                       unusable

Every case is checked before it is preprocessed (`volseg.data.case_checks.check_case`, the
same checks ``volseg verify`` runs). The JSON is written last and atomically: a case counts as
cached only when it exists and its source fingerprint (path, size, mtime of every input file)
matches, so an interrupted build or an edited source file is simply redone; a case that failed
its checks is recorded the same way and checked again only once its files change. Cases are
built in parallel worker processes (`volseg.data.case_pool.map_cases`). Arrays are opened
with ``mmap_mode="r"``: training RAM does not grow with the dataset, only with the patches in
flight.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.case_checks import BadCasesError, CaseProblem, check_case
from volseg.data.case_pool import map_cases
from volseg.data.preprocess import Preprocessor
from volseg.io.atomic import atomic_path, write_json

# Foreground voxels kept per class for oversampling: enough to cover a lesion's extent,
# small enough that the index file stays a few hundred kB even for a whole-organ class.
MAX_LOCATIONS_PER_CLASS = 20_000
# 2: num_classes and in_channels in the key (the locations and checks depend on them);
#    locations as one memory-mappable .npy
CACHE_VERSION = 2


def dataset_cache_dir(cache_dir: str | Path, root: str | Path) -> Path:
    """The cache folder of the dataset at ``root``: ``<cache_dir>/<root name>-<hash>``.

    ``<hash>`` is 8 hex digits of the SHA-1 of ``root``'s resolved absolute path, so each
    dataset gets its own folder (two Decathlon tasks under one ``data.cache_dir`` never share
    a fingerprint or a preprocessed case, even with the same case ids), the same one however
    ``root`` is spelled, and the name says which dataset it is: e.g.
    ``data/cache/decathlon/Task01_BrainTumour-3f2a9c1b/``. Moving or renaming the dataset
    starts a new folder.
    """
    resolved = Path(root).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{resolved.name or 'root'}-{digest}"


class CaseCache:
    """Checked, preprocessed cases of one dataset under one preprocessing setting.

    Args:
        cache_dir: the dataset's own cache folder (`dataset_cache_dir`); a subfolder per
            preprocessing setting is made in it.
        layout: the dataset adapter that reads original cases.
        preprocessor: the preprocessing to apply.
        num_classes: labels must lie in ``[0, num_classes)``.
        in_channels: images must have this many channels (``None``: not checked).
        ignore_index: a label value also allowed: unannotated voxels (sparse annotation).
    """

    def __init__(
        self, cache_dir: str | Path, layout: DatasetLayout, preprocessor: Preprocessor,
        num_classes: int, in_channels: int | None = None, ignore_index: int | None = None,
    ) -> None:
        settings = {"version": CACHE_VERSION, **preprocessor.to_dict(),
                    "num_classes": num_classes, "in_channels": in_channels,
                    "ignore_index": ignore_index}
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.folder = Path(cache_dir) / key
        self.layout = layout
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.ignore_index = ignore_index
        self._settings = settings

    def _path(self, case_id: str, kind: str) -> Path:
        return self.folder / f"{case_id}.{kind}"

    def _record(self, case: Case, kind: str) -> dict | None:
        """The case's JSON record of ``kind`` if it matches the case's current source files."""
        path = self._path(case.case_id, kind)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record if record.get("source") == _fingerprint(case) else None

    def is_cached(self, case: Case) -> bool:
        return self._record(case, "json") is not None

    def recorded_problems(self, cases: Sequence[Case]) -> list[CaseProblem]:
        """Problems found when ``cases`` were last built, for those whose files are unchanged."""
        problems = []
        for case in cases:
            record = self._record(case, "problems.json")
            if record is not None:
                problems += [CaseProblem(**p) for p in record["problems"]]
        return problems

    def build(
        self, cases: Sequence[Case], workers: int | None = None, skip_bad: bool = False,
        show_progress: bool = True, pool_min_seconds: float | None = None,
    ) -> list[CaseProblem]:
        """Check and preprocess every case not cached yet (or whose source files changed).

        Args:
            workers: processes to build in; ``None`` for `default_workers`, 0 or 1 to build in
                this process.
            skip_bad: return the problems of cases that fail their checks instead of raising.
            show_progress: draw a progress bar (done/total) while building.
            pool_min_seconds: when worker processes pay off (see `map_cases`).

        Returns:
            The problems of every case in ``cases`` that failed its checks (this time, or in an
            earlier build of the same files); those cases have no arrays.

        Raises:
            BadCasesError: some cases failed their checks and ``skip_bad`` is false; the error
                lists them all.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self._settings, self.folder / "preprocessing.json")
        known = self.recorded_problems(cases)
        known_ids = {p.case_id for p in known}
        todo = [c for c in cases if c.case_id not in known_ids and not self.is_cached(c)]
        results = map_cases(self._build_case, todo, workers, "preprocessing", show_progress,
                            pool_min_seconds)
        problems = known + [p for _, found in results for p in found]
        if problems and not skip_bad:
            raise BadCasesError(problems)
        return problems

    def _build_case(self, case: Case) -> list[CaseProblem]:
        # Fingerprinted before reading: a file edited meanwhile no longer matches next time.
        source = _fingerprint(case)
        checked = check_case(self.layout, case, self.num_classes, self.in_channels,
                             self.ignore_index)
        if checked.problems:
            self._path(case.case_id, "json").unlink(missing_ok=True)
            write_json({"case_id": case.case_id, "source": source,
                        "problems": [asdict(p) for p in checked.problems]},
                       self._path(case.case_id, "problems.json"))
            return checked.problems
        image, label = checked.image, checked.label
        # The image decides the grid (its non-zero box when cropping); the label follows it.
        trace = self.preprocessor.trace(image)
        pre_image = self.preprocessor.image(image, trace)
        pre_label = self.preprocessor.label(label, trace)
        with atomic_path(self._path(case.case_id, "image.npy")) as tmp:
            np.save(tmp, pre_image.array.astype(np.float32, copy=False))
        with atomic_path(self._path(case.case_id, "label.npy")) as tmp:
            np.save(tmp, pre_label.array)
        locations = _class_locations(pre_label.array, self.num_classes, seed=case.case_id)
        # One flat array, memory-mapped when read: a training process that keeps every case's
        # locations (the patch dataset does) holds page cache, not memory of its own.
        bounds, start = {}, 0
        for c, indices in locations.items():
            bounds[str(c)] = [start, start + indices.size]
            start += indices.size
        flat = np.concatenate([np.zeros(0, np.int64), *locations.values()]).astype(np.int64)
        with atomic_path(self._path(case.case_id, "locations.npy")) as tmp:
            np.save(tmp, flat)
        # [:K] drops the count of an ignore label above the classes.
        counts = np.bincount(pre_label.array.ravel(), minlength=self.num_classes)
        counts = counts[: self.num_classes]
        write_json(
            {
                "case_id": case.case_id,
                "source": source,
                "original": image.geometry(),
                "preprocessed": pre_image.geometry(),
                "trace": trace.to_dict(),  # how to put a prediction back on the original grid
                "class_voxels": counts.tolist(),
                "locations": bounds,  # class -> [start, stop) in <case>.locations.npy
            },
            self._path(case.case_id, "json"),
        )
        self._path(case.case_id, "problems.json").unlink(missing_ok=True)  # fixed since
        return []

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """Memory-mapped ``(image, label)`` arrays and the case's metadata."""
        image = np.load(self._path(case_id, "image.npy"), mmap_mode="r")
        label = np.load(self._path(case_id, "label.npy"), mmap_mode="r")
        return image, label, self.metadata(case_id)

    def metadata(self, case_id: str) -> dict:
        """The case's record: geometry before/after preprocessing, ``class_voxels``, source."""
        return json.loads(self._path(case_id, "json").read_text())

    def classes_present(self, case_id: str) -> list[int]:
        """Foreground classes with at least one voxel in the preprocessed label."""
        counts = self.metadata(case_id)["class_voxels"]
        return [c for c, n in enumerate(counts) if c > 0 and n > 0]

    def locations(self, case_id: str) -> dict[int, np.ndarray]:
        """Flat voxel indices (into the preprocessed label) per foreground class present.

        Memory-mapped views: keeping them costs no memory of the process's own.
        """
        bounds = self.metadata(case_id)["locations"]
        if not bounds:
            return {}  # an empty file cannot be memory-mapped
        flat = np.load(self._path(case_id, "locations.npy"), mmap_mode="r")
        return {int(c): flat[start:stop] for c, (start, stop) in bounds.items()}


def _fingerprint(case: Case) -> list:
    files = [*case.image_paths, *([case.label_path] if case.label_path else [])]
    fingerprint = []
    for path in map(Path, files):
        try:
            stat = path.stat()
            fingerprint.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:  # a missing file is a finding of the checks, not a crash here
            fingerprint.append([str(path), None, None])
    return fingerprint


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

