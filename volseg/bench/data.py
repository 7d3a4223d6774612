"""``volseg bench data``: cache build time, and training RAM against dataset size.

A dataset of N random cases (float32 volumes with a few label blobs, NIfTI, in the nnU-Net raw
layout) is written to a temporary folder for each N in ``--cases``. For each N the cache is
built once in this process (``cache_workers=0``) and once with worker processes (a fresh
process, so starting the workers is part of the time, as in a first training run). Then a
fresh process per N builds the real `SegmentationDataModule` over that cache and iterates
``--batches`` training batches from its train loader (``num_workers=0``, so everything happens
in the measured process), reading its resident set size from ``/proc/self/status``: after
setup, after the batches (split into anonymous memory, the process's own, and file-backed
pages: shared libraries, torch's above all, and the cache pages mapped at that moment), and
the peak.

The cached arrays are memory-mapped and only the patches are read: the anonymous memory
should not grow with N. File-backed pages are page cache that the kernel may drop at any time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from volseg.bench.machine import machine_description
from volseg.bench.report import comma_ints
from volseg.io.atomic import write_report

SOURCE_SPACING = (1.0, 1.0, 1.5)  # mm; the cache resamples to TARGET_SPACING, as real runs do
TARGET_SPACING = (1.5, 1.5, 1.5)
CLASS_NAMES = ["background", "organ", "lesion"]
_RESULT_PREFIX = "VOLSEG_BENCH_DATA_RESULT "


@dataclass
class DataResult:
    """One table row: a dataset of ``cases`` cases; ``None`` where nothing was measured."""

    cases: int
    source_mb: float = 0.0
    cache_mb: float = 0.0
    serial_s: float | None = None
    parallel_s: float | None = None
    setup_mb: float | None = None
    rss_mb: float | None = None
    anon_mb: float | None = None
    file_mb: float | None = None
    peak_mb: float | None = None


def write_dataset(root: Path, num_cases: int, size: Sequence[int], seed: int = 0) -> Path:
    """Write ``num_cases`` random cases of ``size`` voxels (x, y, z) as uncompressed NIfTI.

    Images are float32 noise, brighter inside the labels: one large ellipsoid (class 1) and
    two small spheres (class 2) per case. Uncompressed, so writing 100 cases takes seconds.
    """
    from volseg.io import Volume, write_volume

    rng = np.random.default_rng(seed)
    grid = np.indices(tuple(size), dtype=np.float32)
    shape = np.asarray(size, dtype=np.float32)
    for index in range(num_cases):
        label = np.zeros(tuple(size), np.uint8)
        centre = shape * rng.uniform(0.35, 0.65, 3)
        radii = shape * rng.uniform(0.15, 0.25, 3)
        label[(((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2)
              .sum(0) <= 1] = 1
        for _ in range(2):
            centre = shape * rng.uniform(0.3, 0.7, 3)
            radius = float(shape.min()) * rng.uniform(0.03, 0.06)
            label[((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2] = 2
        image = rng.normal(0.0, 1.0, tuple(size)).astype(np.float32) + label
        name = f"case_{index:03d}"
        volume = Volume(image, SOURCE_SPACING)
        write_volume(volume, root / "imagesTr" / f"{name}_0000.nii", compress=False)
        write_volume(volume.with_array(label), root / "labelsTr" / f"{name}.nii", compress=False)
    _write_dataset_json(root, num_cases)
    return root


def _write_dataset_json(root: Path, num_cases: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "noise"},
        "labels": {name: value for value, name in enumerate(CLASS_NAMES)},
        "numTraining": num_cases,
        "file_ending": ".nii",
    }))


def subset(source: Path, root: Path, num_cases: int) -> Path:
    """A dataset of the first ``num_cases`` cases of ``source``, hard-linked (no copies)."""
    for folder, suffix in (("imagesTr", "_0000.nii"), ("labelsTr", ".nii")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(num_cases):
            name = f"case_{index:03d}{suffix}"
            os.link(source / folder / name, root / folder / name)
    _write_dataset_json(root, num_cases)
    return root


def datamodule_settings(root: Path, cache_dir: Path, patch: Sequence[int], batch_size: int,
                        batches: int, workers: int) -> dict[str, Any]:
    """Keyword arguments of `SegmentationDataModule` for a benchmark dataset (plain data)."""
    return {
        "root": str(root), "num_classes": len(CLASS_NAMES), "in_channels": 1,
        "class_names": CLASS_NAMES, "spacing": list(TARGET_SPACING), "patch_size": list(patch),
        "batch_size": batch_size, "num_workers": 0,
        "preprocessing": {"intensity": "zscore"}, "cache_dir": str(cache_dir),
        "split": {"val": 0.2, "test": 0.2, "seed": 0, "folds": 5, "stratify": False,
                  "file": str(root / "splits.json")},
        "samples_per_epoch": batches * batch_size, "cache_workers": workers,
    }


def _datamodule(settings: dict[str, Any]) -> Any:
    from volseg.data import SegmentationDataModule
    from volseg.data.adapters.decathlon import DecathlonLayout

    return SegmentationDataModule(layout=DecathlonLayout, **settings)


def build_seconds(settings: dict[str, Any]) -> float:
    """Seconds to check and cache every case, with ``settings["cache_workers"]`` processes.

    Worker processes are used whatever the dataset's size (``pool_min_seconds=0``).
    """
    datamodule = _datamodule(settings)
    cases = datamodule.cases()
    start = time.perf_counter()
    datamodule.cache.build(cases, settings["cache_workers"], show_progress=False,
                           pool_min_seconds=0)
    return time.perf_counter() - start


def training_memory(settings: dict[str, Any]) -> dict[str, float]:
    """RSS (MiB) after setup and after iterating the whole train loader, in this process."""
    import torch

    torch.set_num_threads(1)
    datamodule = _datamodule(settings)
    datamodule.prepare_data()  # all cached: only the fingerprints are compared
    datamodule.setup("fit")
    gc.collect()
    setup = _status()
    for _ in datamodule.train_dataloader():
        pass
    gc.collect()
    after = _status()
    return {"setup_mb": setup["VmRSS"], "rss_mb": after["VmRSS"], "anon_mb": after["RssAnon"],
            "file_mb": after["RssFile"], "peak_mb": after["VmHWM"]}


def _status() -> dict[str, float]:
    """Memory lines of ``/proc/self/status`` in MiB (Linux)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # the file states kB
    return values


_TASKS = {"build": build_seconds, "memory": training_memory}


def in_subprocess(task: str, settings: dict[str, Any]) -> Any:
    """Run ``_TASKS[task](settings)`` in a fresh Python process and return its result.

    Raises:
        RuntimeError: the process failed; the message holds the end of its output.
    """
    env = dict(os.environ)
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "volseg.bench.data"],
                          input=json.dumps({"task": task, "settings": settings}),
                          capture_output=True, text=True, env=env, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    raise RuntimeError(f"bench data {task} process failed (exit {proc.returncode}): "
                       f"{proc.stderr.strip()[-2000:]}")


def _worker() -> int:
    """Subprocess side of `in_subprocess`: request JSON on stdin, result on stdout."""
    request = json.loads(sys.stdin.read())
    result = _TASKS[request["task"]](request["settings"])
    print(_RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def benchmark_data(
    case_counts: Sequence[int], size: Sequence[int], patch: Sequence[int], batches: int,
    batch_size: int, workers: int, folder: Path,
) -> list[DataResult]:
    """Measure every dataset size of ``case_counts`` (see the module doc); files go in ``folder``.

    Raises:
        ValueError: fewer than 3 cases (a split needs train, val and test), bad sizes, or a
            ``folder`` that is not empty.
    """
    if min(case_counts) < 3:
        raise ValueError(f"--cases must be at least 3 each (train, val, test), got {case_counts}")
    if len(size) != 3 or len(patch) != 3 or min(*size, *patch) < 1 or batches < 1:
        raise ValueError(f"--size and --patch need 3 positive voxel counts, --batches >= 1; "
                         f"got {size}, {patch}, {batches}")
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"--folder {folder} is not empty")
    print(f"writing {max(case_counts)} cases of {size} voxels ...", file=sys.stderr, flush=True)
    source = write_dataset(folder / "source", max(case_counts), size)
    results = []
    for count in case_counts:
        row = DataResult(count)
        root = subset(source, folder / f"cases_{count}", count)
        row.source_mb = _megabytes(root)
        settings = datamodule_settings(root, folder / f"cache_{count}", patch, batch_size,
                                       batches, 0)
        print(f"{count} cases: building the cache ...", file=sys.stderr, flush=True)
        row.serial_s = build_seconds(settings)
        row.cache_mb = _megabytes(folder / f"cache_{count}")
        if workers > 1:
            parallel = {**settings, "cache_workers": workers,
                        "cache_dir": str(folder / f"cache_{count}_parallel")}
            row.parallel_s = in_subprocess("build", parallel)
            _remove(Path(parallel["cache_dir"]))
        print(f"{count} cases: iterating {batches} batches ...", file=sys.stderr, flush=True)
        for key, value in in_subprocess("memory", settings).items():
            setattr(row, key, value)
        results.append(row)
    return results


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _remove(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()


def format_table(results: Sequence[DataResult], workers: int, batches: int) -> str:
    """The results as a Markdown table, one row per dataset size."""
    def number(value: float | None, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    lines = [
        f"| cases | source MB | cache MB | build s, in-process | build s, {workers} workers "
        f"| RSS MB after setup | RSS MB after {batches} batches | anonymous MB | file-backed MB "
        "| peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = [str(r.cases), number(r.source_mb), number(r.cache_mb), number(r.serial_s, 1),
                 number(r.parallel_s, 1), number(r.setup_mb), number(r.rss_mb),
                 number(r.anon_mb), number(r.file_mb), number(r.peak_mb)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``data`` subcommand's options."""
    from volseg.data.case_pool import default_workers

    parser.add_argument("--cases", type=comma_ints, default=[10, 100],
                        help="comma-separated dataset sizes to compare (default 10,100)")
    parser.add_argument("--size", type=comma_ints, default=[128, 128, 96],
                        help="voxels x,y,z of every generated case (default 128,128,96)")
    parser.add_argument("--patch", type=comma_ints, default=[64, 64, 48],
                        help="training patch x,y,z in voxels (default 64,64,48)")
    parser.add_argument("--batches", type=int, default=20,
                        help="training batches iterated per dataset size (default 20)")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per batch (default 2)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="cache-building processes for the parallel build; 0 or 1 skips it "
                             f"(default min(4, CPU cores) = {default_workers()})")
    parser.add_argument("--folder", default=None,
                        help="where to write the datasets and caches (default: a temporary "
                             "folder, removed afterwards)")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Run the ``data`` benchmark from parsed arguments; print (and write) the table."""
    with tempfile.TemporaryDirectory(prefix="volseg-bench-data-") as scratch:
        folder = Path(args.folder) if args.folder else Path(scratch)
        try:
            results = benchmark_data(args.cases, args.size, args.patch, args.batches,
                                     args.batch_size, args.workers, folder)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    machine = machine_description("cpu")
    table = format_table(results, args.workers, args.batches)
    print(f"{machine}\n\n{table}")
    if args.markdown:
        command = (f"volseg bench data --cases {','.join(map(str, args.cases))} "
                   f"--size {','.join(map(str, args.size))} "
                   f"--patch {','.join(map(str, args.patch))} --batches {args.batches} "
                   f"--batch-size {args.batch_size} --workers {args.workers}")
        write_report(
            args.markdown, "Data pipeline benchmarks", command, machine,
            "Each dataset holds float32 random cases with label blobs, uncompressed NIfTI, "
            f"resampled to {TARGET_SPACING} mm and z-scored into the cache. *build s* is the "
            "time to check and cache every case, in the process (`data.cache_workers=0`) or "
            "with worker processes (a fresh process: starting the workers is included). The "
            "memory columns come from `/proc/self/status` of a fresh process that builds the "
            "`SegmentationDataModule` and iterates its train loader (`num_workers=0`): "
            "*anonymous* is the process's own memory, *file-backed* its pages of mapped files "
            "(shared libraries, torch's above all, and cache pages mapped at that moment: page "
            "cache the kernel can drop).",
            table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
