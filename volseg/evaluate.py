"""Score predictions against reference labels (``volseg evaluate pred=<folder> gt=<folder>``).

Pairs every prediction with the reference file of the same name (``case.nii.gz`` with
``case.nii.gz``, any volume format SimpleITK reads; as nnU-Net's evaluation, references without
a prediction are not scored, only counted), checks each pair shares one grid, and scores every
case and foreground class with Dice, IoU, volume similarity, HD95 and surface Dice in mm
(`volseg.metrics`, whose empty-mask conventions apply). Writes into ``output``:

- ``evaluation.json``: settings, per-case values and per-class summaries (schema in
  docs/evaluation.md);
- ``evaluation.csv``: one row per case and class;
- ``overlays/<case>.png`` when ``images=<folder>`` is given: image | reference | prediction
  through the largest reference structure, in three planes;

and prints a summary table. Exits 1 when any case could not be scored (a prediction without
reference, unreadable file, grids that differ); the other cases are still scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from volseg.atomic import write_csv, write_json
from volseg.inference.predictor import find_inputs, volume_stem
from volseg.io import Volume, VolumeReadError, read_channels, read_volume
from volseg.metrics import dice, iou, surface_metrics, volume_similarity
from volseg.overlay import overlay_picture, write_png

log = logging.getLogger(__name__)

METRICS = ("dice", "iou", "volume_similarity", "hd95", "surface_dice")


def volume_files(folder: str | Path) -> dict[str, Path]:
    """Volume files of a folder by case name (file name without its volume suffix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = {}
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path)
        if path.is_file() and stem is not None and not path.name.startswith("."):
            files[stem] = path
    return files


def score_case(
    prediction: Volume, reference: Volume, num_classes: int, tolerance_mm: float
) -> dict[str, list[float]]:
    """Every metric for one case: metric name -> one value per foreground class.

    Raises:
        ValueError: the two grids differ (shape, spacing, origin or direction).
    """
    mismatch = reference.geometry_mismatch(prediction)
    if mismatch:
        raise ValueError(f"prediction grid differs from the reference: {mismatch}")
    pred = torch.from_numpy(prediction.array.astype(np.int64))[None]
    ref = torch.from_numpy(reference.array.astype(np.int64))[None]
    values = {
        "dice": dice(pred, ref, num_classes),
        "iou": iou(pred, ref, num_classes),
        "volume_similarity": volume_similarity(pred, ref, num_classes),
    }
    surface = surface_metrics(pred, ref, reference.spacing, tolerance_mm, num_classes=num_classes)
    values["hd95"] = surface["hd95"]
    values["surface_dice"] = surface["surface_dice"]
    return {name: [float(v) for v in values[name][0]] for name in METRICS}


def summarise(cases: Sequence[dict], class_names: Sequence[str]) -> dict[str, dict]:
    """Per class and metric: mean, std, median and count over the cases where it is finite.

    NaN (class in neither mask) and inf (a distance to an empty mask) are left out of the
    statistics and counted separately, so one missed structure does not hide the rest.
    """
    summary: dict[str, dict] = {}
    for k, name in enumerate(class_names[1:]):
        summary[name] = {}
        for metric in METRICS:
            raw = np.array([case["metrics"][metric][k] for case in cases], dtype=float)
            finite = raw[np.isfinite(raw)]
            summary[name][metric] = {
                "mean": float(finite.mean()) if finite.size else None,
                "std": float(finite.std()) if finite.size else None,
                "median": float(np.median(finite)) if finite.size else None,
                "n": int(finite.size),
                "undefined": int(np.isnan(raw).sum()),
                "infinite": int(np.isinf(raw).sum()),
            }
    return summary


def _json_number(value: float) -> float | str | None:
    """JSON has no NaN or inf: NaN becomes null, inf the string "inf"."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else value


def evaluate(
    pred: str | Path,
    gt: str | Path,
    output: str | Path,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    tolerance_mm: float = 2.0,
    images: str | Path | None = None,
    cases: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score every prediction in ``pred`` against its reference in ``gt``; write the reports.

    Args:
        pred: folder of predicted label maps.
        gt: folder of reference label maps, same file names.
        output: folder for ``evaluation.json``, ``evaluation.csv`` and ``overlays/``.
        num_classes: C including background; ``None``: the largest label found + 1.
        class_names: one per class, background first; ``None``: ``class_1``, ...
        tolerance_mm: surface Dice tolerance.
        images: folder of the images (nnU-Net ``_0000`` naming allowed) for overlays.
        cases: score only these predictions (by case name), e.g. the label maps `volseg predict`
            just wrote beside its probability and uncertainty maps.

    Returns:
        The report written to ``evaluation.json``, plus ``failed``: ``[(case, reason)]``.
    """
    predictions, references = volume_files(pred), volume_files(gt)
    if cases is not None:
        predictions = {case: path for case, path in predictions.items() if case in set(cases)}
    if not predictions:
        raise FileNotFoundError(f"{pred}: no prediction files (pred)")
    failed = [(case, f"no reference in {gt}") for case in predictions if case not in references]
    unpredicted = sorted(set(references) - set(predictions))
    loaded: dict[str, tuple[Volume, Volume]] = {}
    for case in sorted(set(references) & set(predictions)):
        try:
            loaded[case] = (read_volume(predictions[case]), read_volume(references[case]))
        except VolumeReadError as error:
            failed.append((case, str(error)))
    if num_classes is None:
        num_classes = 1 + max(
            [int(max(p.array.max(), r.array.max())) for p, r in loaded.values()] or [1]
        )
    names = list(class_names) if class_names else ["background"] + [
        f"class_{k}" for k in range(1, num_classes)
    ]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but num_classes={num_classes}")
    image_cases = {c.case_id: c for c in find_inputs(images)} if images else {}
    output = Path(output)
    cases = []
    for case, (prediction, reference) in loaded.items():
        try:
            metrics = score_case(prediction, reference, num_classes, tolerance_mm)
        except ValueError as error:
            failed.append((case, f"{predictions[case]}: {error}"))
            continue
        cases.append({"case": case, "prediction": str(predictions[case]),
                      "reference": str(references[case]), "metrics": metrics})
        if case in image_cases:
            image = read_channels(image_cases[case].paths).array[0]
            picture = overlay_picture(image, reference.array, prediction.array,
                                      reference.spacing)
            write_png(picture, output / "overlays" / f"{case}.png")
    report = {
        "settings": {"pred": str(pred), "gt": str(gt), "num_classes": num_classes,
                     "class_names": names, "tolerance_mm": tolerance_mm},
        "summary": summarise(cases, names),
        "cases": [
            {**c, "metrics": {m: {n: _json_number(v) for n, v in zip(names[1:], values)}
                              for m, values in c["metrics"].items()}}
            for c in cases
        ],
        "failed": [{"case": case, "reason": reason} for case, reason in failed],
        "unpredicted": unpredicted,
    }
    write_json(report, output / "evaluation.json")
    write_csv([{"case": case["case"], "class": name,
                **{m: case["metrics"][m][k] for m in METRICS}}
               for case in cases for k, name in enumerate(names[1:])],
              output / "evaluation.csv", ["case", "class", *METRICS])
    return {**report, "failed": failed}


def summary_table(report: dict) -> Table:
    """Mean of every metric per class over the cases where it is finite, as a Rich table."""
    table = Table(title=f"{len(report['cases'])} case(s) scored, {len(report['failed'])} failed, "
                        f"{len(report['unpredicted'])} reference(s) without a prediction")
    table.add_column("class")
    headings = {"volume_similarity": "vol. sim.", "hd95": "HD95 mm", "surface_dice": "NSD"}
    for metric in METRICS:
        table.add_column(headings.get(metric, metric), justify="right")
    table.add_column("cases", justify="right")
    for name, metrics in report["summary"].items():
        cells = ["—" if metrics[m]["mean"] is None else f"{metrics[m]['mean']:.4f}"
                 for m in METRICS]
        table.add_row(name, *cells, str(metrics["dice"]["n"]))
    return table
