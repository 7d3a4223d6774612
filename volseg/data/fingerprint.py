"""Dataset fingerprint: what nnU-Net's planning reads off a dataset before training.

Following nnU-Net's ``DatasetFingerprintExtractor`` (Isensee et al. 2021, Nat. Methods 18:203):
per case the voxel spacing, the shape before and after cropping to the non-zero box, and the
voxels of each class; over the dataset the spacing and shape statistics the planner uses, and
intensity statistics of foreground voxels (label > 0) per channel, from a sample of voxels per
case. The CT normalisation (``intensity: ct_percentile``) takes its clip range and z-score from
these statistics (`with_dataset_statistics`).

`volseg plan` computes and saves the fingerprint in the dataset's own cache folder
(`fingerprint_path`); the data module can read it back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.cache import dataset_cache_dir
from volseg.data.preprocess import (
    Preprocessor,
    nonzero_box,
    orientation_code,
    orientation_transform,
)
from volseg.io.atomic import write_json

# nnU-Net's collect_foreground_intensities draws 10,000 voxels per case by default (its planner
# passes 1e8 / number of cases): plenty for percentiles, bounded memory for any dataset.
SAMPLES_PER_CASE = 10_000
PERCENTILES = (0.5, 50.0, 99.5)
FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_VERSION = 1


@dataclass
class CaseFingerprint:
    """One case as the planner sees it.

    Attributes:
        case_id: the case's name.
        spacing: voxel size (x, y, z) in mm, in the fingerprint's axis order.
        shape: voxels (x, y, z).
        cropped_shape: voxels of the box of non-zero image voxels (nnU-Net's shape after crop).
        orientation: the file's own axis code (``"LPS"``, ``"RAS"``, ...).
        class_voxels: voxels per label value ``0..num_classes-1``.
    """

    case_id: str
    spacing: list[float]
    shape: list[int]
    cropped_shape: list[int]
    orientation: str
    class_voxels: list[int]


@dataclass
class IntensityStatistics:
    """Foreground intensities of one channel (``None`` when no case has foreground).

    Keys as in nnU-Net's ``foreground_intensity_properties_per_channel``.
    """

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    percentile_00_5: float | None
    percentile_50: float | None
    percentile_99_5: float | None
    voxels: int = 0


@dataclass
class Fingerprint:
    """Everything the planner (`volseg.planning.plan`) needs from a dataset; JSON-serialisable.

    Attributes:
        cases: one `CaseFingerprint` per case.
        intensity: one `IntensityStatistics` per image channel.
        num_classes: label values counted, background included.
        orientation: the axis code spacings and shapes are given in (``None``: each file's own
            axis order), the preprocessing's ``orientation``.
        samples_per_case: foreground voxels drawn per case for the intensity statistics.
    """

    cases: list[CaseFingerprint]
    intensity: list[IntensityStatistics]
    num_classes: int
    orientation: str | None = None
    samples_per_case: int = SAMPLES_PER_CASE
    version: int = FINGERPRINT_VERSION

    @property
    def spacings(self) -> np.ndarray:
        """``(cases, 3)`` spacings in mm."""
        return np.array([c.spacing for c in self.cases], dtype=float).reshape(-1, 3)

    def shapes(self, cropped: bool = False) -> np.ndarray:
        """``(cases, 3)`` shapes in voxels, after cropping to non-zero if ``cropped``."""
        rows = [c.cropped_shape if cropped else c.shape for c in self.cases]
        return np.array(rows, dtype=float).reshape(-1, 3)

    @property
    def class_voxels(self) -> list[int]:
        """Voxels per class over the dataset."""
        return np.sum([c.class_voxels for c in self.cases], axis=0, dtype=np.int64).tolist()

    @property
    def class_case_fraction(self) -> list[float]:
        """Fraction of cases holding at least one voxel of each class."""
        present = np.array([c.class_voxels for c in self.cases]) > 0
        return present.mean(axis=0).tolist()

    def summary(self) -> dict:
        """The dataset-level numbers, for readers of the JSON file and the plan's table."""
        spacings = self.spacings
        return {
            "cases": len(self.cases),
            "median_spacing": np.median(spacings, 0).tolist(),
            "min_spacing": spacings.min(0).tolist(),
            "max_spacing": spacings.max(0).tolist(),
            "median_shape": np.median(self.shapes(), 0).tolist(),
            "median_cropped_shape": np.median(self.shapes(cropped=True), 0).tolist(),
            "class_voxels": self.class_voxels,
            "class_case_fraction": self.class_case_fraction,
        }

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fingerprint:
        data = {k: v for k, v in data.items() if k != "summary"}  # derived, recomputed
        return cls(
            **{**data, "cases": [CaseFingerprint(**c) for c in data["cases"]],
               "intensity": [IntensityStatistics(**s) for s in data["intensity"]]}
        )

    def save(self, path: str | Path) -> Path:
        """Write the fingerprint as JSON, atomically."""
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> Fingerprint:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class _Samples:
    """Foreground voxels drawn so far, per channel."""

    channels: list[list[np.ndarray]] = field(default_factory=list)

    def add(self, values: np.ndarray) -> None:
        """``values``: ``(C, n)`` voxels of one case."""
        if not self.channels:
            self.channels = [[] for _ in values]
        if len(values) != len(self.channels):
            raise ValueError(f"a case has {len(values)} channels, the first {len(self.channels)}")
        for store, channel in zip(self.channels, values):
            store.append(channel)

    def statistics(self) -> list[IntensityStatistics]:
        result = []
        for store in self.channels:
            values = np.concatenate(store).astype(np.float64)
            if values.size == 0:
                result.append(IntensityStatistics(None, None, None, None, None, None, None))
                continue
            low, median, high = np.percentile(values, PERCENTILES)
            result.append(IntensityStatistics(
                mean=float(values.mean()), std=float(values.std()), min=float(values.min()),
                max=float(values.max()), percentile_00_5=float(low),
                percentile_50=float(median), percentile_99_5=float(high), voxels=values.size,
            ))
        return result


def compute_fingerprint(
    layout: DatasetLayout,
    cases: Sequence[Case],
    num_classes: int,
    orientation: str | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 1234,
    progress: Callable[[str], None] | None = None,
) -> Fingerprint:
    """Fingerprint ``cases``, each read through ``layout.read_image`` / ``read_label``.

    A case with more foreground voxels than ``samples_per_case`` contributes that many, drawn
    without replacement (the same voxels in every channel); a smaller one contributes all of
    its own. nnU-Net draws with replacement so that every case weighs the same; drawing without
    keeps the statistics those of real voxels, and of exactly all of them on small data.

    Args:
        num_classes: label values ``1..num_classes-1`` are foreground; larger values (an
            ignore label for sparse annotation) are neither counted nor sampled.
        orientation: report spacings and shapes in this axis code (the preprocessing's).
        seed: seeds the per-case draws (with the case id), so a fingerprint is reproducible.
        progress: called with each case id before it is read.
    """
    if not cases:
        raise ValueError("no cases to fingerprint: check data.root")
    if samples_per_case < 1:
        raise ValueError(f"samples_per_case must be positive, got {samples_per_case}")
    records, samples = [], _Samples()
    for case in cases:
        if progress is not None:
            progress(case.case_id)
        image, label = layout.read_image(case), layout.read_label(case)
        array = image.array if image.array.ndim == 4 else image.array[None]
        permutation = [0, 1, 2]
        if orientation is not None:
            permutation = list(orientation_transform(image.direction, orientation)[0])
        box = nonzero_box(array)
        cropped = image.spatial_shape if box is None else [stop - start for start, stop in box]
        values = label.array.astype(np.int64, copy=False)
        counted = values[(values >= 0) & (values < num_classes)]
        records.append(CaseFingerprint(
            case_id=case.case_id,
            spacing=[float(image.spacing[p]) for p in permutation],
            shape=[int(image.spatial_shape[p]) for p in permutation],
            cropped_shape=[int(cropped[p]) for p in permutation],
            orientation=orientation_code(image.direction),
            class_voxels=np.bincount(counted, minlength=num_classes).tolist(),
        ))
        foreground = np.flatnonzero((values > 0) & (values < num_classes))
        if foreground.size > samples_per_case:
            rng = np.random.default_rng([seed, _case_number(case.case_id)])
            foreground = np.sort(rng.choice(foreground, samples_per_case, replace=False))
        samples.add(array.reshape(len(array), -1)[:, foreground])
    return Fingerprint(records, samples.statistics(), num_classes, orientation, samples_per_case)


def _case_number(case_id: str) -> int:
    return int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16)


def with_dataset_statistics(preprocessor: Preprocessor, fingerprint: Fingerprint) -> Preprocessor:
    """A copy of ``preprocessor`` holding the dataset's foreground statistics.

    nnU-Net's CT normalisation clips to the foreground 0.5 and 99.5 percentiles and z-scores
    with the foreground mean and standard deviation; these travel in ``statistics`` (and so in
    the checkpoint) for ``intensity: ct_percentile``.

    Raises:
        ValueError: the fingerprint found no foreground voxels in some channel.
    """
    empty = [i for i, s in enumerate(fingerprint.intensity) if s.mean is None]
    if empty or not fingerprint.intensity:
        raise ValueError(
            f"the dataset fingerprint has no foreground voxels (label > 0) in channel(s) {empty}: "
            "data.preprocessing.intensity=ct_percentile needs them; set "
            "data.preprocessing.statistics by hand or choose another intensity scheme"
        )
    columns = {"mean": "mean", "std": "std", "lower": "percentile_00_5",
               "upper": "percentile_99_5"}
    statistics = {key: [getattr(s, name) for s in fingerprint.intensity]
                  for key, name in columns.items()}
    return dataclasses.replace(preprocessor, statistics=statistics)


def fingerprint_path(cache_dir: str | Path, root: str | Path) -> Path:
    """Where the dataset at ``root`` keeps its fingerprint: in its own cache folder.

    ``<cache_dir>/<root name>-<hash of the resolved root>/fingerprint.json``
    (`volseg.data.cache.dataset_cache_dir`), beside its preprocessed-case folders: datasets
    sharing ``data.cache_dir`` never read each other's statistics.
    """
    return dataset_cache_dir(cache_dir, root) / FINGERPRINT_FILE


def load_or_compute_fingerprint(
    path: str | Path, layout: DatasetLayout, cases: Sequence[Case], num_classes: int,
    orientation: str | None = None, **kwargs: object,
) -> Fingerprint:
    """The fingerprint saved at ``path`` if it covers exactly ``cases`` with the same
    ``num_classes`` and ``orientation``; else `compute_fingerprint`, saved there.

    Edited files under an unchanged case list are not noticed: delete the file (or rerun
    ``volseg plan``) after changing a dataset's contents.
    """
    path = Path(path)
    if path.is_file():
        saved = Fingerprint.load(path)
        if ([c.case_id for c in saved.cases] == [c.case_id for c in cases]
                and saved.num_classes == num_classes and saved.orientation == orientation
                and saved.version == FINGERPRINT_VERSION):
            return saved
    fingerprint = compute_fingerprint(layout, cases, num_classes, orientation, **kwargs)
    fingerprint.save(path)
    return fingerprint
