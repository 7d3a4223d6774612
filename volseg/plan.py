"""Fingerprint a dataset and suggest its spacing and patch size: ``volseg plan``.

``volseg plan data=<name> [key=value ...]`` composes ``train.yaml`` with the same overrides as
``volseg train`` (``--config-dir DIR`` adds a folder of your own configs), builds the data
module (no training), fingerprints its cases (`volseg.data.fingerprint`), writes the
fingerprint beside the cache, prints it, and suggests settings by nnU-Net's rules (Isensee et
al. 2021, Nat. Methods 18:203):

- target spacing: the median spacing; for anisotropic data (the coarsest median spacing more
  than 3x the others and the median shape along it less than a third of the others) the 10th
  percentile of that axis instead, never finer than the other axes;
- the median shape at that spacing (of each case resampled, as nnU-Net computes it);
- a patch size: the largest patch that is a multiple of the model's divisor (``2**(levels-1)``
  for a U-Net), stays within a voxel budget (128**3 by default) and keeps the median shape's
  aspect (see `suggest_patch_size`).

Plan options go under ``+plan.``: ``+plan.voxel_budget=1048576``, ``+plan.samples_per_case=...``.
The printed overrides (``data.spacing=[...] data.patch_size=[...]``) go straight to
``volseg train``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from volseg.compose import compose_config, split_config_dir
from volseg.data.fingerprint import (
    SAMPLES_PER_CASE,
    Fingerprint,
    compute_fingerprint,
    fingerprint_path,
    with_dataset_statistics,
)
from volseg.trusted import instantiate_trusted

# nnU-Net's ANISO_THRESHOLD: an axis this many times coarser than the others is "anisotropic".
ANISOTROPY_THRESHOLD = 3.0
# Voxels in a patch: 128**3, about what a 3D U-Net trains on per sample in 8-11 GB.
VOXEL_BUDGET = 128**3
# Patch sizes are multiples of this when the model does not say (four poolings).
DEFAULT_DIVISOR = 16
USAGE = """usage: volseg plan [--config-dir DIR] data=<name> [key=value ...]

Fingerprints the dataset of data=<name> and suggests data.spacing and data.patch_size.
Takes the overrides `volseg train` takes; plan options: +plan.voxel_budget=N,
+plan.samples_per_case=N."""


@dataclass
class Plan:
    """Suggested settings for one dataset.

    Attributes:
        spacing: target spacing (x, y, z) in mm, or ``None`` with ``fixed_size``.
        median_shape: median case shape (voxels) at ``spacing``.
        patch_size: training patch (voxels).
        divisor: every patch size is a multiple of it (the model's).
        voxel_budget: the patch holds at most this many voxels (unless ``divisor**3`` is more).
        separate_z: the data is anisotropic enough for nnU-Net's separate-z resampling.
        statistics: foreground intensity statistics, for ``intensity: ct_percentile``.
    """

    spacing: list[float] | None
    median_shape: list[int]
    patch_size: list[int]
    divisor: int
    voxel_budget: int
    separate_z: bool = False
    statistics: dict | None = field(default=None)

    def overrides(self) -> list[str]:
        """Command-line overrides that apply the plan to ``train.py``."""
        items = []
        if self.spacing is not None:
            items.append(f"data.spacing={_list(self.spacing)}")
        items.append(f"data.patch_size={_list(self.patch_size)}")
        if self.separate_z:
            # ++ adds the key where a data config does not list it
            items.append(f"++data.preprocessing.anisotropy_threshold={ANISOTROPY_THRESHOLD}")
        if self.statistics is not None:
            inner = ",".join(f"{k}:{_list(v)}" for k, v in self.statistics.items())
            items.append(f"++data.preprocessing.statistics={{{inner}}}")
        return items


def _list(values: Sequence[float]) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in values) + "]"


def suggest_spacing(
    fingerprint: Fingerprint, cropped: bool = False, threshold: float = ANISOTROPY_THRESHOLD
) -> list[float]:
    """nnU-Net's fullres target spacing (``determine_fullres_target_spacing``), in mm.

    The median spacing, except when one axis is both coarse (more than ``threshold`` times the
    coarsest other median spacing) and short (its median shape times ``threshold`` below the
    other axes'): then the 10th percentile of that axis's spacings, but at least the other
    axes' spacing, so a few thin-slice cases do not force heavy upsampling of all.
    """
    spacings = fingerprint.spacings
    target = np.percentile(spacings, 50, axis=0)
    sizes = np.percentile(fingerprint.shapes(cropped), 50, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != worst]
    coarse = target[worst] > threshold * max(target[others])
    short = sizes[worst] * threshold < min(sizes[others])
    if coarse and short:
        percentile_10 = np.percentile(spacings[:, worst], 10)
        if percentile_10 < max(target[others]):
            percentile_10 = max(max(target[others]), percentile_10) + 1e-5
        target[worst] = percentile_10
    return target.tolist()


def median_shape_at(
    fingerprint: Fingerprint, spacing: Sequence[float], cropped: bool = False
) -> list[int]:
    """Median shape (voxels) of the cases resampled to ``spacing``, as nnU-Net's planner."""
    shapes = np.round(fingerprint.shapes(cropped) * fingerprint.spacings / np.asarray(spacing))
    return [int(round(n)) for n in np.median(shapes, axis=0)]


def suggest_patch_size(
    median_shape: Sequence[int], divisor: int, voxel_budget: int = VOXEL_BUDGET
) -> list[int]:
    """The largest patch of multiples of ``divisor`` within ``voxel_budget`` voxels.

    Starts from the median shape rounded up to the divisor (one patch covers a median case) and
    takes ``divisor`` off one axis at a time until the patch fits, then adds back to the
    relatively smallest axis whatever still fits, so the patch keeps the median shape's aspect.
    nnU-Net's planner cuts the axis largest relative to the median shape; here the cut goes to
    the axis that stays relatively largest after it, which is the same on large axes but does
    not halve a thin slab's few slices (32 -> 16) while the in-plane axes lose 3% a step.
    """
    median = np.maximum(np.asarray(median_shape, dtype=float), 1)
    cap = [max(divisor, math.ceil(m / divisor) * divisor) for m in median]
    patch = list(cap)
    while math.prod(patch) > voxel_budget:
        shrinkable = [axis for axis in range(3) if patch[axis] > divisor]
        if not shrinkable:
            break  # divisor**3 is already over budget: the smallest patch the model takes
        axis = max(shrinkable, key=lambda a: ((patch[a] - divisor) / median[a], patch[a]))
        patch[axis] -= divisor
    grown = True
    while grown:
        grown = False
        for axis in sorted(range(3), key=lambda a: patch[a] / median[a]):
            larger = math.prod(patch) // patch[axis] * (patch[axis] + divisor)
            if patch[axis] < cap[axis] and larger <= voxel_budget:
                patch[axis] += divisor
                grown = True
                break
    return patch


def model_divisor(model: Mapping) -> int:
    """What the model's input sizes must be multiples of.

    The config's ``divisor`` if it has one, else the network's own ``divisor`` (every volseg
    network has one; built on the meta device, so no memory is spent), else
    `DEFAULT_DIVISOR`.
    """
    if model.get("divisor") is not None:
        return int(model["divisor"])
    try:
        with torch.device("meta"):
            network = instantiate_trusted(model)
    except Exception:  # noqa: BLE001 - an unbuildable model still gets a plan, with the default
        return DEFAULT_DIVISOR
    return int(getattr(network, "divisor", DEFAULT_DIVISOR))


def make_plan(
    fingerprint: Fingerprint,
    divisor: int = DEFAULT_DIVISOR,
    voxel_budget: int = VOXEL_BUDGET,
    cropped: bool = False,
    fixed_size: Mapping | None = None,
) -> Plan:
    """Suggested spacing and patch size for ``fingerprint``.

    Args:
        cropped: use the shapes after cropping to non-zero (``crop_nonzero``).
        fixed_size: the preprocessing's ``fixed_size``; then every volume has that shape and
            there is no spacing to suggest.
    """
    if fixed_size is not None:
        spacing = None
        median_shape = [*fixed_size["in_plane"], fixed_size["slices"]]
        separate_z = False
    else:
        spacing = suggest_spacing(fingerprint, cropped)
        median_shape = median_shape_at(fingerprint, spacing, cropped)
        median_spacing = np.median(fingerprint.spacings, axis=0)
        separate_z = any(s.max() / s.min() > ANISOTROPY_THRESHOLD
                         for s in (np.asarray(spacing), median_spacing))
    patch = suggest_patch_size(median_shape, divisor, voxel_budget)
    return Plan(spacing, median_shape, patch, divisor, voxel_budget, separate_z)


def run_plan(cfg: DictConfig, console: Console | None = None) -> tuple[Plan, Fingerprint, Path]:
    """Fingerprint ``cfg.data``'s cases, save the fingerprint, print it and the plan.

    Returns:
        The plan, the fingerprint, and where the fingerprint was written.
    """
    console = console or Console()
    options = cfg.get("plan") or {}
    datamodule = instantiate(cfg.data)
    datamodule.layout.prepare()  # generates the synthetic dataset on first use
    cases = datamodule.cases()
    preprocessor = datamodule.preprocessor
    with console.status("fingerprinting") as status:
        fingerprint = compute_fingerprint(
            datamodule.layout, cases, datamodule.num_classes, preprocessor.orientation,
            samples_per_case=int(options.get("samples_per_case", SAMPLES_PER_CASE)),
            progress=lambda case_id: status.update(f"fingerprinting {case_id}"),
        )
    path = fingerprint.save(fingerprint_path(cfg.data.cache_dir, cfg.data.root))
    plan = make_plan(
        fingerprint,
        divisor=model_divisor(OmegaConf.to_container(cfg.model, resolve=True)),
        voxel_budget=int(options.get("voxel_budget", VOXEL_BUDGET)),
        cropped=preprocessor.crop_nonzero,
        fixed_size=preprocessor.fixed_size,
    )
    if preprocessor.intensity == "ct_percentile":
        plan.statistics = with_dataset_statistics(preprocessor, fingerprint).statistics
    print_plan(console, fingerprint, plan, list(cfg.data.class_names), path)
    return plan, fingerprint, path


def print_plan(
    console: Console, fingerprint: Fingerprint, plan: Plan, class_names: Sequence[str],
    path: Path,
) -> None:
    """The fingerprint and the plan as Rich tables, then the overrides to use."""
    summary = fingerprint.summary()
    axes = f" ({fingerprint.orientation} axes)" if fingerprint.orientation else ""
    table = _axes_table(f"Dataset fingerprint: {summary['cases']} cases{axes}")
    for label, key, unit in [("median spacing", "median_spacing", " mm"),
                             ("min spacing", "min_spacing", " mm"),
                             ("max spacing", "max_spacing", " mm"),
                             ("median shape", "median_shape", ""),
                             ("median shape, non-zero box", "median_cropped_shape", "")]:
        table.add_row(label, *(f"{v:.4g}{unit}" for v in summary[key]))
    console.print(table)

    intensity = Table(title="Foreground intensities (label > 0), sampled")
    for column in ("channel", "voxels", "mean", "std", "0.5%", "50%", "99.5%", "min", "max"):
        intensity.add_column(column)
    for channel, s in enumerate(fingerprint.intensity):
        values = [s.mean, s.std, s.percentile_00_5, s.percentile_50, s.percentile_99_5, s.min,
                  s.max]
        intensity.add_row(str(channel), str(s.voxels),
                          *("-" if v is None else f"{v:.5g}" for v in values))
    console.print(intensity)

    classes = Table(title="Classes")
    for column in ("class", "voxels", "cases holding it"):
        classes.add_column(column)
    names = [*class_names, *(str(c) for c in range(len(class_names), fingerprint.num_classes))]
    for name, voxels, fraction in zip(names, summary["class_voxels"],
                                      summary["class_case_fraction"]):
        classes.add_row(name, f"{voxels:,}", f"{fraction:.0%}")
    console.print(classes)

    suggested = _axes_table("Suggested (nnU-Net's rules)")
    if plan.spacing is not None:
        suggested.add_row("target spacing", *(f"{v:.4g} mm" for v in plan.spacing))
    suggested.add_row("median shape there", *map(str, plan.median_shape))
    suggested.add_row(f"patch (multiples of {plan.divisor}, <= {plan.voxel_budget:,} voxels)",
                      *map(str, plan.patch_size))
    console.print(suggested)
    if plan.spacing is None:
        console.print("data.preprocessing.fixed_size is set: volumes are resized, not resampled")
    if plan.separate_z:
        console.print("anisotropic spacing: nnU-Net resamples the coarse axis with nearest "
                      "neighbour (data.preprocessing.anisotropy_threshold)")
    console.print("overrides:", " ".join(plan.overrides()), soft_wrap=True)
    console.print(f"fingerprint written to {path}", soft_wrap=True)


def _axes_table(title: str) -> Table:
    """A table with a row label and one column per axis."""
    table = Table(title=title)
    table.add_column("", style="bold")
    for axis in "xyz":
        table.add_column(axis)
    return table


def main(argv: Sequence[str] | None = None) -> Plan:
    """Entry point of ``volseg plan``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        raise SystemExit(0)
    config_dir, overrides = split_config_dir(argv)
    plan, _, _ = run_plan(compose_config(overrides, config_dir=config_dir))
    return plan


if __name__ == "__main__":
    main()
