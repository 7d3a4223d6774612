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

Every case is checked before it is preprocessed (`check_case`, the same checks
``volseg verify`` runs). The JSON is written last and atomically: a case counts as
cached only when it exists and its source fingerprint (path, size, mtime of every input file)
matches, so an interrupted build or an edited source file is simply redone; a case that failed
its checks is recorded the same way and checked again only once its files change. Cases are
built in parallel worker processes. Arrays are opened with ``mmap_mode="r"``: training RAM
does not grow with the dataset, only with the patches in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from volseg.atomic import atomic_path, write_json
from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume, nifti_findings

# Foreground voxels kept per class for oversampling: enough to cover a lesion's extent,
# small enough that the index file stays a few hundred kB even for a whole-organ class.
MAX_LOCATIONS_PER_CLASS = 20_000
# 2: num_classes and in_channels in the key (the locations and checks depend on them);
#    locations as one memory-mappable .npy
CACHE_VERSION = 2
# What can be wrong with a case, in the order `volseg verify` reports them.
PROBLEM_KINDS = ("dataset", "missing", "unreadable", "channels", "geometry", "labels",
                 "non-finite")
# Serial seconds the cases left after the first must promise before worker processes are
# started for them: starting them costs seconds (5-10 on a 2-core machine, where the fork
# server imports torch and Lightning), and two workers at best halve the rest.
POOL_MIN_SECONDS = 30.0
# Label values listed in a message at most (a float label map can hold millions).
_MAX_VALUES_SHOWN = 10

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseProblem:
    """One reason a case (or the whole dataset) cannot be trained on.

    Attributes:
        case_id: the case, or ``""`` for the dataset as a whole (its listing failed).
        kind: one of `PROBLEM_KINDS`.
        message: one line that starts with the file at fault.
    """

    case_id: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


class BadCasesError(ValueError):
    """Cases failed their checks; the message lists every problem, one line each."""

    def __init__(self, problems: Sequence[CaseProblem]) -> None:
        self.problems = list(problems)
        cases = len({p.case_id for p in self.problems})
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{cases} case(s) failed their checks; fix them, or set data.skip_bad_cases=true "
            f"to train without them (volseg verify lists them too):\n{lines}"
        )


@dataclass
class CheckedCase:
    """A case as read from disk, and what is wrong with it (nothing when ``problems`` is empty)."""

    image: Volume | None
    label: Volume | None
    problems: list[CaseProblem]


def check_case(
    layout: DatasetLayout, case: Case, num_classes: int, in_channels: int | None = None,
    ignore_index: int | None = None,
) -> CheckedCase:
    """Read one case and check that it can be trained on.

    Checks, each reported as a `CaseProblem` naming the file: a file is missing or unreadable
    (including a NIfTI file shorter than its header says, see `nifti_findings`), the image has
    other than ``in_channels`` channels, the label grid differs from the image's (shape,
    spacing, origin, direction), label values lie outside ``0..num_classes-1`` (other than
    ``ignore_index``, the label of unannotated voxels), and NaN/inf voxels. A case is fit for
    training when the returned ``problems`` is empty.
    """
    problems: list[CaseProblem] = []

    def report(kind: str, message: str) -> None:
        problems.append(CaseProblem(case.case_id, kind, message))

    image = _read(case, case.image_paths, layout.read_image, report)
    if case.label_path is None:
        report("missing", f"{case.image_paths[0]}: case {case.case_id} has no label file")
        label = None
    else:
        label = _read(case, (case.label_path,), layout.read_label, report)
    if image is not None:
        _check_image(image, case, in_channels, report)
    if label is not None:
        _check_label(label, image, case.label_path, num_classes, report, ignore_index)
    return CheckedCase(image, label, problems)


def case_problems(
    layout: DatasetLayout, case: Case, num_classes: int, in_channels: int | None = None,
    ignore_index: int | None = None,
) -> list[CaseProblem]:
    """`check_case` without the volumes: cheap to send back from a worker process."""
    return check_case(layout, case, num_classes, in_channels, ignore_index).problems


def _read(
    case: Case, paths: Sequence[Path], read: Callable[[Case], Volume],
    report: Callable[[str, str], None],
) -> Volume | None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        report("missing", f"{missing[0]}: no such file")
        return None
    findings = [finding for path in paths for finding in nifti_findings(path)]
    for kind, message in findings:
        report(kind, message)
    if any(kind == "unreadable" for kind, _ in findings):
        return None
    try:
        return read(case)
    except (OSError, ValueError) as error:  # VolumeReadError is a ValueError naming the file
        named = any(str(p) in str(error) for p in paths)
        report("unreadable", str(error) if named else f"{paths[0]}: {error}")
        return None


def _check_image(
    image: Volume, case: Case, in_channels: int | None, report: Callable[[str, str], None]
) -> None:
    channels = image.array if image.array.ndim == 4 else image.array[None]
    if in_channels is not None and len(channels) != in_channels:
        report("channels", f"{case.image_paths[0]}: {len(channels)} channel(s), "
                           f"data.in_channels={in_channels}")
    if not np.issubdtype(channels.dtype, np.floating):
        return  # integer voxels are always finite
    one_file_each = len(case.image_paths) == len(channels)
    for index, channel in enumerate(channels):
        bad = channel.size - int(np.count_nonzero(np.isfinite(channel)))
        if bad:
            path = case.image_paths[index if one_file_each else 0]
            where = "" if one_file_each else f" in channel {index}"
            report("non-finite", f"{path}: {bad} NaN/inf voxel(s){where}")


def _check_label(
    label: Volume, image: Volume | None, path: Path, num_classes: int,
    report: Callable[[str, str], None], ignore_index: int | None = None,
) -> None:
    if image is not None:
        mismatch = image.geometry_mismatch(label)
        if mismatch:
            report("geometry", f"{path}: label grid differs from its image: {mismatch}")
    values = label.array
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            report("non-finite", f"{path}: {values.size - int(finite.sum())} NaN/inf voxel(s)")
            values = values[finite]
        if values.size and not np.array_equal(values, np.round(values)):
            report("labels", f"{path}: label values are not whole numbers")
            return
    if ignore_index is not None:
        values = values[values != ignore_index]
    # min/max first: np.unique sorts the whole volume, needed only to describe a failure.
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        shown = np.unique(values)
        listed = ", ".join(f"{v:g}" for v in shown[:_MAX_VALUES_SHOWN].tolist())
        more = ", ..." if shown.size > _MAX_VALUES_SHOWN else ""
        report("labels", f"{path}: label values [{listed}{more}] outside "
                         f"0..{num_classes - 1} (data.num_classes={num_classes})")


# --- the cache ---------------------------------------------------------------------------------


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


def default_workers() -> int:
    """Cache-building processes when ``data.cache_workers`` is null: min(4, usable CPU cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)


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


def map_cases(
    function: Callable[[Case], T], cases: Sequence[Case], workers: int | None = None,
    description: str = "", show_progress: bool = True,
    pool_min_seconds: float | None = None,
) -> list[tuple[Case, T]]:
    """``[(case, function(case))]`` in the order of ``cases``, in worker processes when it pays.

    Worker processes take seconds to start (a fork server imports torch for them), so the
    first case runs in this process and is timed; workers start only when the remaining cases
    would take longer than ``pool_min_seconds`` here. They start with forkserver (spawn where
    there is none), never fork: a forked copy of a process that already runs torch threads can
    deadlock. Each worker uses one torch thread; the workers are the parallelism. ``function``
    and the cases must pickle (a module-level function, a `functools.partial`, a bound method
    of a picklable object), and a script that builds a cache needs the
    ``if __name__ == "__main__":`` guard. A Rich progress bar shows the cases done of the total.

    Args:
        workers: processes at most; ``None`` for `default_workers`, 0 or 1 for this process.
        description: the progress bar's label.
        pool_min_seconds: see above; ``None`` for `POOL_MIN_SECONDS`, 0 to always use workers.

    Raises:
        RuntimeError: ``function`` raised for a case; the message names the case and its first
            file, and the remaining cases are cancelled.
    """
    workers = default_workers() if workers is None else workers
    pool_min_seconds = POOL_MIN_SECONDS if pool_min_seconds is None else pool_min_seconds
    results: list[tuple[Case, T]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=not show_progress or not cases) as progress:
        task = progress.add_task(description, total=len(cases))

        def done(case: Case, result: T) -> None:
            results.append((case, result))
            progress.advance(task)

        def here(case: Case) -> None:
            try:
                result = function(case)
            except Exception as error:
                raise _case_error(case, error) from error
            done(case, result)

        remaining = list(cases)
        if workers > 1 and len(remaining) > 1:
            start = time.perf_counter()
            here(remaining.pop(0))
            if (time.perf_counter() - start) * len(remaining) >= pool_min_seconds:
                remaining = _map_in_pool(function, remaining, workers, done)
        for case in remaining:
            here(case)
    position = {case.case_id: i for i, case in enumerate(cases)}
    return sorted(results, key=lambda item: position[item[0].case_id])


def _map_in_pool(
    function: Callable[[Case], T], cases: Sequence[Case], workers: int,
    done: Callable[[Case, T], None],
) -> list[Case]:
    """Run `map_cases` in worker processes; return the cases left undone if the pool broke."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Import this module (torch, ...) once in the fork server, not in every worker. This
        # sets the process-wide preload list and takes effect only if the server has not
        # started yet; "__main__" is the default entry.
        context.set_forkserver_preload(["__main__", __name__])
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, len(cases)), mp_context=context,
                               initializer=_init_worker)
    finished: set[str] = set()
    try:
        futures: dict[Future, Case] = {pool.submit(function, c): c for c in cases}
        for future in as_completed(futures):
            case = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                # A worker died: killed for memory, or the main script lacks the
                # `if __name__ == "__main__":` guard that spawned workers need. In this process
                # the rest still gets done.
                log.warning("cache worker processes died; building the remaining cases in "
                            "this process (data.cache_workers=0 skips the workers)")
                return [c for c in cases if c.case_id not in finished]
            except Exception as error:
                raise _case_error(case, error) from error
            done(case, result)
            finished.add(case.case_id)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return []


def _case_error(case: Case, error: Exception) -> RuntimeError:
    """An unexpected error while handling ``case``, re-raised naming the case and its file."""
    return RuntimeError(
        f"case {case.case_id} ({case.image_paths[0]}): {type(error).__name__}: {error}"
    )


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


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

