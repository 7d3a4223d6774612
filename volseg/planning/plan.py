"""A dataset's training planned from its fingerprint by nnU-Net's rules (Isensee et al. 2021,
Nat. Methods 18:203); ``volseg plan`` (`volseg.cli.plan`) runs it on a data config:

- target spacing: the median spacing; for anisotropic data (the coarsest median spacing more
  than 3x the others and the median shape along it less than a third of the others) the 10th
  percentile of that axis instead, never finer than the other axes;
- intensity normalisation from the channels' names (``dataset.json``'s ``channel_names``): all
  CT, nnU-Net's CT scheme (clip to the foreground's 0.5/99.5 percentiles, z-score with its mean
  and std); otherwise a z-score, over the non-zero voxels when cropping to them shrinks the
  median case below 3/4 (nnU-Net's rule); cases cropped to their non-zero box;
- patch size, batch size, normalisation layers and the `volseg.models.DynamicUNet` topology
  that fit ``plan.gpu_memory_gb`` (`volseg.planning.network`).

The plan becomes a Hydra config that ``volseg train plan=<file>`` trains with: no other choice
is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from volseg.data.fingerprint import (
    SAMPLES_PER_CASE,
    Fingerprint,
    with_dataset_statistics,
)
from volseg.data.preprocess import Preprocessor
from volseg.planning.network import NetworkPlan, plan_network

# nnU-Net's ANISO_THRESHOLD: an axis this many times coarser than the others is "anisotropic".
ANISOTROPY_THRESHOLD = 3.0
# nnU-Net z-scores over the non-zero voxels when cropping to them leaves less than this share.
NONZERO_NORM_FRACTION = 0.75
# `plan.<option>=<value>` on the command line, with these defaults (nnU-Net's where it has one).
OPTIONS = {
    "gpu_memory_gb": 8.0,       # memory of one training step on one device (GiB)
    "base_features": 32,        # channels of the first level, doubling per level
    "max_features": 320,        # their cap
    "deep_supervision": True,   # supervise the coarser decoder levels too
    "samples_per_case": SAMPLES_PER_CASE,  # foreground voxels sampled for intensity statistics
    "output": None,             # the plan file; default plans/<data>.yaml in the current folder
    "overwrite": False,         # replace an existing plan file
}
@dataclass
class Plan:
    """Everything a training run needs to know about one dataset.

    Attributes:
        spacing: target spacing (x, y, z) in mm, or ``None`` with ``fixed_size``.
        median_shape: median case shape (voxels) at ``spacing``.
        network: patch, batch, normalisation and network topology.
        preprocessing: the ``data.preprocessing`` settings the plan sets.
        separate_z: the data is anisotropic enough for nnU-Net's separate-z resampling.
    """

    spacing: list[float] | None
    median_shape: list[int]
    network: NetworkPlan
    preprocessing: dict = field(default_factory=dict)
    separate_z: bool = False

    @property
    def patch_size(self) -> list[int]:
        return self.network.patch_size

    def config(self) -> dict:
        """The ``data``, ``model`` and ``loss`` settings of the plan file."""
        data = {"patch_size": self.patch_size, "batch_size": self.network.batch_size,
                "preprocessing": dict(self.preprocessing)}
        if self.spacing is not None:
            data["spacing"] = [round(float(s), 6) for s in self.spacing]
        if self.separate_z:
            data["preprocessing"]["anisotropy_threshold"] = ANISOTROPY_THRESHOLD
        return {"data": data, "model": self.network.model_settings()}


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


def plan_intensity(
    channel_names: Sequence[str] | None, fingerprint: Fingerprint, preprocessor: Preprocessor
) -> dict:
    """``data.preprocessing`` settings for the channels named ``channel_names``.

    Channels without names keep the data config's scheme (its ``ct_percentile`` gets the
    dataset's statistics). A mix of CT and other channels is z-scored: one scheme serves all.
    """
    kept = np.median(np.prod(fingerprint.shapes(cropped=True), 1))
    whole = np.median(np.prod(fingerprint.shapes(), 1))
    settings: dict = {"crop_nonzero": True}
    names = [str(n).upper() for n in channel_names or []]
    if names:
        scheme = "ct_percentile" if all(n == "CT" for n in names) else "zscore"
    else:
        scheme = preprocessor.intensity
    settings["intensity"] = scheme
    if scheme == "ct_percentile":
        statistics = with_dataset_statistics(preprocessor, fingerprint).statistics
        # checked now, so a degenerate dataset fails here rather than when training starts
        settings["statistics"] = Preprocessor(intensity=scheme, statistics=statistics).statistics
    elif scheme == "zscore":
        settings["nonzero"] = bool(kept / whole < NONZERO_NORM_FRACTION)
    return settings


def make_plan(
    fingerprint: Fingerprint,
    in_channels: int,
    channel_names: Sequence[str] | None = None,
    preprocessor: Preprocessor | None = None,
    options: Mapping | None = None,
) -> Plan:
    """The complete plan for ``fingerprint``.

    Args:
        in_channels: image channels.
        channel_names: modality per channel (``"CT"``, ``"T2"``, ...), if the layout knows.
        preprocessor: the data config's preprocessing (its ``fixed_size``, ``orientation`` and,
            for unnamed channels, its intensity scheme).
        options: `OPTIONS` to change.
    """
    options = {**OPTIONS, **(options or {})}
    preprocessor = preprocessor or Preprocessor()
    intensity = plan_intensity(channel_names, fingerprint, preprocessor)
    cropped = intensity["crop_nonzero"]
    fixed_size = preprocessor.fixed_size
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
    network = plan_network(
        spacing or [1.0, 1.0, 1.0],  # resized to a fixed size: treated as isotropic voxels
        median_shape, in_channels, fingerprint.num_classes,
        dataset_voxels=float(np.prod(median_shape)) * len(fingerprint.cases),
        gpu_memory_gb=float(options["gpu_memory_gb"]),
        base_features=int(options["base_features"]),
        max_features=int(options["max_features"]),
        deep_supervision=bool(options["deep_supervision"]),
    )
    return Plan(spacing, median_shape, network, intensity, separate_z)
