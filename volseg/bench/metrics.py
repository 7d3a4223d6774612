"""``volseg bench metrics``: surface metrics against MONAI and SimpleITK, same masks.

Two masks on a 256 x 256 x 200 grid with 0.8 x 0.8 x 2.5 mm voxels (a CT-like anisotropy): the
target an ellipsoid, the prediction a shifted, resized ellipsoid plus scattered false-positive
voxels, so that HD (driven by the outliers) and HD95 differ as they do on real predictions.
Every tool computes each metric on the same arrays in this process; the table shows each value,
the median time of ``--repeats`` runs, and volseg's time as a fraction of the tool's.
MONAI, SimpleITK and medpy are optional here: a tool that is not installed is listed as such.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from volseg.bench.machine import machine_description
from volseg.io.atomic import write_report
from volseg.metrics import average_surface_distance, hausdorff_distance, surface_dice

TOLERANCE_MM = 2.0


def make_masks(
    shape: Sequence[int], seed: int = 0, outlier_fraction: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, target)`` boolean masks of ``shape``, as described in the module docstring."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]

    def ellipsoid(centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        # Broadcast one axis at a time rather than materialising np.indices (3 float arrays).
        total = np.zeros(tuple(shape), dtype=np.float32)
        for axis, (x, c, r) in enumerate(zip(axes, centre, radii, strict=True)):
            view = [1] * len(shape)
            view[axis] = -1
            total = total + (((x - c) / r) ** 2).reshape(view)
        return total <= 1.0

    size = np.asarray(shape, dtype=np.float64)
    target = ellipsoid(size / 2, size * [0.27, 0.23, 0.2])
    pred = ellipsoid(size / 2 + [3, -2, 1], size * [0.265, 0.245, 0.19])
    rng = np.random.default_rng(seed)
    pred |= rng.random(tuple(shape)) < outlier_fraction
    return pred, target


@dataclass
class Row:
    metric: str
    tool: str
    value: float | None
    seconds: float | None
    note: str = ""


def _timed(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    """``(value, median seconds)`` of ``repeats`` calls after one untimed warm-up call."""
    value = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def _volseg(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, Callable]:
    """Each metric through volseg's public functions, on the same one-hot input MONAI gets."""
    p, t = torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None]
    options = {"include_background": True}
    return {
        "HD95": lambda: hausdorff_distance(p, t, spacing, 95, **options).item(),
        "HD": lambda: hausdorff_distance(p, t, spacing, None, **options).item(),
        "ASSD": lambda: average_surface_distance(p, t, spacing, **options).item(),
        f"NSD@{TOLERANCE_MM:g}mm": lambda: surface_dice(
            p, t, spacing, TOLERANCE_MM, **options
        ).item(),
        "HD95 pooled": lambda: hausdorff_distance(p, t, spacing, 95, pooled=True, **options).item(),
    }


def _monai(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, Callable]:
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    # MONAI takes one-hot (N, C, ...) tensors; one channel, background included, is the mask.
    p, t = torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None]
    spacing = list(spacing)
    return {
        "HD95": lambda: compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        ).item(),
        "HD": lambda: compute_hausdorff_distance(
            p, t, include_background=True, spacing=spacing
        ).item(),
        "ASSD": lambda: compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        ).item(),
        f"NSD@{TOLERANCE_MM:g}mm": lambda: compute_surface_dice(
            p, t, [TOLERANCE_MM], include_background=True, spacing=spacing
        ).item(),
    }


def _simpleitk(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]
) -> dict[str, Callable]:
    import SimpleITK as sitk

    def image(mask: np.ndarray) -> sitk.Image:
        # SimpleITK indexes (z, y, x): transpose so its x axis is our first axis.
        result = sitk.GetImageFromArray(mask.T.astype(np.uint8))
        result.SetSpacing([float(s) for s in spacing])
        return result

    a, b = image(pred), image(target)

    def hausdorff() -> float:
        measure = sitk.HausdorffDistanceImageFilter()
        measure.Execute(a, b)
        return measure.GetHausdorffDistance()

    return {"HD": hausdorff}


def _medpy(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float]) -> dict[str, Callable]:
    from medpy.metric.binary import assd, hd, hd95

    return {
        "HD95 pooled": lambda: float(hd95(pred, target, voxelspacing=spacing)),
        "HD": lambda: float(hd(pred, target, voxelspacing=spacing)),
        "ASSD": lambda: float(assd(pred, target, voxelspacing=spacing)),
    }


TOOLS: dict[str, Callable[..., dict[str, Callable]]] = {
    "volseg": _volseg,
    "MONAI": _monai,
    "SimpleITK": _simpleitk,
    "medpy": _medpy,
}


def benchmark_metrics(
    shape: Sequence[int], spacing: Sequence[float], repeats: int, tools: Sequence[str]
) -> list[Row]:
    """Time every metric of every installed tool in ``tools`` on the same two masks."""
    pred, target = make_masks(shape)
    rows = []
    for tool in tools:
        try:
            functions = TOOLS[tool](pred, target, spacing)
        except ImportError as error:
            rows.append(Row("—", tool, None, None, f"not installed ({error.name})"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns on every call about its own options
            for metric, fn in functions.items():
                value, seconds = _timed(fn, repeats)
                rows.append(Row(metric, tool, value, seconds))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table grouped by metric, volseg first; a ratio < 1 means volseg is faster."""
    ours = {r.metric: r for r in rows if r.tool == "volseg"}
    lines = [
        "| metric | tool | value (mm, NSD a fraction) | seconds | volseg ÷ tool time "
        "| abs. difference from volseg |",
        "|---|---|---:|---:|---:|---:|",
    ]
    notes = []
    for metric in ours:
        for r in [x for x in rows if x.metric == metric]:
            mine = ours[metric]
            ratio = "" if r is mine else f"{mine.seconds / r.seconds:.2f}"
            diff = "" if r is mine else f"{abs(r.value - mine.value):.1e}"
            lines.append(
                f"| {metric} | {r.tool} | {r.value:.4f} | {r.seconds:.3f} | {ratio} | {diff} |"
            )
    notes = [f"- {r.tool}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``metrics`` subcommand's options."""
    add = parser.add_argument
    add("--shape", type=int, nargs=3, default=[256, 256, 200],
        help="mask grid, voxels (default 256 256 200)")
    add("--spacing", type=float, nargs=3, default=[0.8, 0.8, 2.5],
        help="voxel size per axis, mm (default 0.8 0.8 2.5)")
    add("--repeats", type=int, default=3,
        help="timed calls per metric after one untimed call (default 3)")
    add("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    add("--markdown", default=None, metavar="PATH",
        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Run the ``metrics`` benchmark from parsed arguments; print (and write) the table."""
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or "volseg" not in tools:
        print(
            f"error: --tools must include volseg and come from {sorted(TOOLS)}, got {tools}",
            file=sys.stderr,
        )
        return 2
    rows = benchmark_metrics(args.shape, args.spacing, args.repeats, tools)
    machine = machine_description()
    shape = "x".join(str(n) for n in args.shape)
    spacing = " x ".join(f"{s:g}" for s in args.spacing)
    header = (
        f"{machine}\nmasks: {shape} voxels at {spacing} mm, median of {args.repeats} "
        "calls after one warm-up"
    )
    table = format_table(rows)
    print(f"{header}\n\n{table}")
    if args.markdown:
        command = (
            f"volseg bench metrics --shape {' '.join(map(str, args.shape))} "
            f"--spacing {' '.join(f'{s:g}' for s in args.spacing)} "
            f"--repeats {args.repeats}"
        )
        explanation = __doc__.split("\n\n", 1)[1].strip()
        write_report(args.markdown, "Surface-metric benchmark", command, header, explanation,
                     table)
    return 0
