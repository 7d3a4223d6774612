"""Score predictions against references in a dataset's own terms (``volseg evaluate``).

Pairs every prediction with the reference of the same case: a flat folder of label files
(``case.nii.gz`` with ``case.nii.gz``), a dataset root whose layout is recognised
(`volseg.data.adapters.detect`), or a data config's cases (``data=kits23``). References from a
dataset are read by its layout, with the label remaps training applies (KiTS23's cysts merged
into background). As nnU-Net's evaluation, references without a prediction are not scored,
only counted. Each pair must share one grid and hold labels ``0..num_classes-1``; an error
names the file at fault.

Scored structures are the foreground classes (and background with ``include_background``) and
any *regions*: unions of labels scored as one structure (KiTS23's kidney + masses, BraTS'
whole tumour), from the checkpoint, the data config or the command line. The metrics are any
of `METRICS` in mm (`volseg.metrics`, whose empty-mask conventions apply; ``both_empty``
chooses the value of a structure in neither map). Writes into ``output``:

- ``evaluation.json``: settings, per-case values and shapes, per-structure statistics and the
  mean over classes (schema in docs/evaluation.md);
- ``evaluation.csv``: one row per case and structure;
- ``evaluation.md``: the summary table, mean +- std per structure and metric;
- ``overlays/<case>.png`` with ``images=<folder>``: image | reference | prediction through the
  largest reference structure, in three planes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from volseg.evaluation.references import Reference, references_under
from volseg.evaluation.tables import write_markdown
from volseg.inference.inputs import find_inputs, read_case
from volseg.io import Volume, VolumeReadError, read_volume
from volseg.io.atomic import write_csv, write_json
from volseg.io.names import volume_files
from volseg.io.overlay import overlay_picture, write_png
from volseg.metrics import dice, iou, surface_metrics, volume_similarity
from volseg.metrics.surface import BOTH_EMPTY_PERFECT

log = logging.getLogger(__name__)

METRICS = ("dice", "iou", "volume_similarity", "hausdorff", "hd95", "assd", "surface_dice")
DEFAULT_METRICS = METRICS
DISTANCES = ("hausdorff", "hd95", "assd")
# ``both_empty``: the value of a structure in neither map. "undefined" is NaN, left out of the
# means (nnU-Net's convention); "perfect" counts it as a match: overlap 1, distance 0.
BOTH_EMPTY = ("undefined", "perfect")


@dataclass(frozen=True)
class Structure:
    """What is scored: a class (one label) or a region (a union of labels)."""

    name: str
    labels: tuple[int, ...]
    kind: str  # "class" or "region"


def structures(class_names: Sequence[str], regions: Mapping[str, Sequence[int]] | None = None,
               include_background: bool = False) -> list[Structure]:
    """The classes (background first with ``include_background``), then the regions, named
    ``region_<name>`` as training logs them (KiTS23's region "tumor" is not the class).

    Raises:
        ValueError: a region names a label outside the foreground classes.
    """
    found = [Structure(name, (k,), "class") for k, name in enumerate(class_names)
             if k > 0 or include_background]
    for name, labels in (regions or {}).items():
        values = tuple(int(v) for v in labels)
        if not values or any(not 0 < v < len(class_names) for v in values):
            raise ValueError(f"regions.{name}: labels {list(values)} must be foreground classes "
                             f"1..{len(class_names) - 1}")
        found.append(Structure(f"region_{name}", values, "region"))
    return found


def check_labels(volume: Volume, num_classes: int, source: str) -> None:
    """Labels must be integers in ``0..num_classes-1``.

    Raises:
        ValueError: naming ``source`` (the file at fault) and the values outside.
    """
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise ValueError(f"{source}: not a label map (non-integer values)")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        outside = np.unique(array[(array < 0) | (array >= num_classes)])[:5]
        raise ValueError(f"{source}: label values {[int(v) for v in outside]} outside "
                         f"0..{num_classes - 1} (num_classes={num_classes})")


def score_case(
    prediction: Volume, reference: Volume, scored: Sequence[Structure],
    metrics: Sequence[str] = DEFAULT_METRICS, tolerance_mm: float = 2.0,
    both_empty: str = "undefined",
) -> dict[str, list[float]]:
    """Each metric for one case: metric name -> one value per structure of ``scored``.

    Raises:
        ValueError: the two grids differ (shape, spacing, origin or direction).
    """
    mismatch = reference.geometry_mismatch(prediction)
    if mismatch:
        raise ValueError(f"the prediction's grid differs from the reference's: {mismatch}")
    perfect = both_empty == "perfect"
    values: dict[str, list[float]] = {m: [] for m in metrics}
    for structure in scored:
        # One structure at a time, as a one-class one-hot pair: two masks in memory at most.
        p = torch.from_numpy(np.isin(prediction.array, structure.labels))[None, None]
        t = torch.from_numpy(np.isin(reference.array, structure.labels))[None, None]
        found: dict[str, float] = {}
        for name, function in (("dice", dice), ("iou", iou),
                               ("volume_similarity", volume_similarity)):
            if name in metrics:
                found[name] = float(function(p, t, 1, include_background=True,
                                             both_empty=1.0 if perfect else math.nan)[0, 0])
        if any(m in metrics for m in (*DISTANCES, "surface_dice")):
            surface = surface_metrics(
                p, t, reference.spacing, tolerance_mm, num_classes=1, include_background=True,
                both_empty=BOTH_EMPTY_PERFECT if perfect else math.nan)
            found.update({m: float(surface[m][0, 0]) for m in (*DISTANCES, "surface_dice")})
        for name in metrics:
            values[name].append(found[name])
    return values


def _statistics(raw: Sequence[float]) -> dict[str, Any]:
    """Mean, std, median and count over the finite values; undefined and infinite counted."""
    array = np.asarray(raw, dtype=float)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "std": float(finite.std()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "n": int(finite.size),
        "undefined": int(np.isnan(array).sum()),
        "infinite": int(np.isinf(array).sum()),
    }


def summarise(cases: Sequence[dict], scored: Sequence[Structure],
              metrics: Sequence[str]) -> dict[str, dict]:
    """Per structure and metric: `_statistics` over the cases.

    NaN (a structure in neither map) and inf (a distance to an empty map) are left out of the
    statistics and counted separately, so one missed structure does not hide the rest.
    """
    return {s.name: {m: _statistics([case["metrics"][m][k] for case in cases]) for m in metrics}
            for k, s in enumerate(scored)}


def class_means(summary: Mapping[str, dict], scored: Sequence[Structure],
                metrics: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """The mean over classes of each metric's class means: ``foreground`` (the classes but
    background), and ``all_classes`` when background is scored (write-up 004's mean IoU with and
    without background). Classes without a finite mean are left out."""
    groups = {"foreground": [s for s in scored if s.kind == "class" and s.labels != (0,)]}
    if any(s.labels == (0,) and s.kind == "class" for s in scored):
        groups["all_classes"] = [s for s in scored if s.kind == "class"]
    means: dict[str, dict[str, float | None]] = {}
    for group, members in groups.items():
        means[group] = {}
        for metric in metrics:
            values = [summary[s.name][metric]["mean"] for s in members
                      if summary[s.name][metric]["mean"] is not None]
            means[group][metric] = float(np.mean(values)) if values else None
    return means


def _json_number(value: float) -> float | str | None:
    """JSON has no NaN or inf: NaN becomes null, inf the string "inf"."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else value


def evaluate(
    pred: str | Path,
    gt: str | Path | None,
    output: str | Path,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    tolerance_mm: float = 2.0,
    images: str | Path | None = None,
    cases: Sequence[str] | None = None,
    *,
    references: Mapping[str, Reference] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    include_background: bool = False,
    both_empty: str = "undefined",
) -> dict[str, Any]:
    """Score every prediction in ``pred`` against its reference; write the reports.

    Args:
        pred: folder of predicted label maps.
        gt: a flat folder of reference label maps with the predictions' file names, or a
            dataset root (see `references_under`); ``None`` with ``references``.
        output: folder for the reports and ``overlays/``.
        num_classes: C including background; ``None``: ``len(class_names)``, else the largest
            label found + 1.
        class_names: one per class, background first; ``None``: ``class_1``, ...
        tolerance_mm: surface Dice tolerance.
        images: folder of the images (nnU-Net ``_0000`` naming, case folders) for overlays.
        cases: score only these predictions (by case name), e.g. the label maps `volseg predict`
            just wrote beside its probability and uncertainty maps.
        references: the references by case, instead of ``gt`` (`dataset_references`).
        regions: name -> label values scored as one structure.
        metrics: which of `METRICS`.
        include_background: score class 0 too (and report the mean over all classes).
        both_empty: one of `BOTH_EMPTY`.

    Returns:
        The report written to ``evaluation.json``, plus ``failed``: ``[(case, reason)]``.

    Raises:
        ValueError: a setting is wrong (before any case is read).
        FileNotFoundError: no prediction, or no reference, was found.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics: {unknown or 'none'}; choose among {', '.join(METRICS)}")
    if both_empty not in BOTH_EMPTY:
        raise ValueError(f"both_empty must be one of {BOTH_EMPTY}, got {both_empty!r}")
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    pred = Path(pred)
    if not pred.is_dir():
        raise FileNotFoundError(f"pred={pred}: no such folder")
    predictions = volume_files(pred)
    if cases is not None:
        predictions = {case: path for case, path in predictions.items() if case in set(cases)}
    if not predictions:
        raise FileNotFoundError(f"pred={pred}: no prediction files")
    if references is None:
        if gt is None:
            raise ValueError("gt: give a folder of references or a dataset (data=...)")
        references = references_under(gt, num_classes)
    failed = [(case, f"no reference for {path} in {gt or 'the dataset'}")
              for case, path in predictions.items() if case not in references]
    unpredicted = sorted(set(references) - set(predictions))
    loaded: dict[str, tuple[Volume, Volume]] = {}
    for case in sorted(set(references) & set(predictions)):
        try:
            loaded[case] = (_read(lambda c=case: read_volume(predictions[c]),
                                  str(predictions[case])),
                            _read(references[case].read, references[case].name))
        except ValueError as error:
            failed.append((case, str(error)))
    if num_classes is None:
        num_classes = 1 + max(
            [int(max(p.array.max(), r.array.max())) for p, r in loaded.values()] or [1])
    names = list(class_names) if class_names else ["background"] + [
        f"class_{k}" for k in range(1, num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but num_classes={num_classes}")
    scored = structures(names, regions, include_background)
    image_cases = {c.case_id: c for c in find_inputs(images)} if images else {}
    output = Path(output)
    scored_cases = []
    for case, (prediction, reference) in loaded.items():
        try:
            check_labels(prediction, num_classes, str(predictions[case]))
            check_labels(reference, num_classes, references[case].name)
            values = score_case(prediction, reference, scored, metrics, tolerance_mm,
                                both_empty)
        except ValueError as error:
            message = str(error)
            if not message.startswith((str(predictions[case]), references[case].name)):
                message = f"{predictions[case]}: {message}"
            failed.append((case, message))
            continue
        scored_cases.append({"case": case, "prediction": str(predictions[case]),
                             "reference": references[case].name,
                             "shape": list(prediction.array.shape), "metrics": values})
        if case in image_cases:
            image = read_case(image_cases[case]).array
            picture = overlay_picture(image if image.ndim == 3 else image[0], reference.array,
                                      prediction.array, reference.spacing)
            write_png(picture, output / "overlays" / f"{case}.png")
    summary = summarise(scored_cases, scored, metrics)
    report = {
        "settings": {"pred": str(pred), "gt": None if gt is None else str(gt),
                     "num_classes": num_classes, "class_names": names,
                     "regions": {name: [int(v) for v in labels]
                                 for name, labels in (regions or {}).items()},
                     "metrics": list(metrics), "include_background": include_background,
                     "tolerance_mm": tolerance_mm, "both_empty": both_empty},
        "summary": summary,
        "mean": class_means(summary, scored, metrics),
        "cases": [
            {**c, "metrics": {m: {s.name: _json_number(v) for s, v in zip(scored, values)}
                              for m, values in c["metrics"].items()}}
            for c in scored_cases
        ],
        "failed": [{"case": case, "reason": reason} for case, reason in failed],
        "unpredicted": unpredicted,
    }
    write_json(report, output / "evaluation.json")
    write_csv([{"case": case["case"], "structure": s.name, "kind": s.kind,
                **{m: case["metrics"][m][k] for m in metrics}}
               for case in scored_cases for k, s in enumerate(scored)],
              output / "evaluation.csv", ["case", "structure", "kind", *metrics])
    write_markdown(report, output / "evaluation.md")
    return {**report, "failed": failed}


def _read(read: Callable[[], Volume], source: str) -> Volume:
    """``read()``, any failure a ValueError whose message starts with ``source``."""
    try:
        return read()
    except (VolumeReadError, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(message if message.startswith(source) else f"{source}: {message}"
                         ) from None


