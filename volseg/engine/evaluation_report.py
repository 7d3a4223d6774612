"""Score a run's test predictions with `volseg.evaluation` once testing ends: a JSON report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl


class EvaluationReport(pl.Callback):
    """Writes ``evaluation.json`` (and ``.csv``, ``.md``) for the predictions a test wrote.

    The test predictions (`TestPredictionWriter`'s ``<run>/predictions``) are scored against
    the test cases' labels, read by the dataset's layout as in training, with the module's class
    names and regions. For reports a write-up names beyond the logged metrics: the 3D ResNet-50
    pipeline's per-class IoU, mean IoU with and without background, and each prediction's
    shape (``experiment=resnet50_5class``).

    Args:
        predictions: the folder the test predictions are written to.
        output: where the reports go.
        metrics: which of `volseg.evaluation.METRICS`.
        include_background: score class 0 too; the report then also has the mean over all
            classes.
        tolerance_mm: surface Dice tolerance.
    """

    def __init__(self, predictions: str | Path, output: str | Path,
                 metrics: Sequence[str] = ("dice", "iou"), include_background: bool = True,
                 tolerance_mm: float = 2.0) -> None:
        from volseg.evaluation import METRICS

        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ValueError(f"callbacks.evaluation_report.metrics: {unknown or 'none'}; "
                             f"choose among {', '.join(METRICS)}")
        self.predictions, self.output = Path(predictions), Path(output)
        self.metrics, self.include_background = list(metrics), include_background
        self.tolerance_mm = tolerance_mm

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        from volseg.evaluation import dataset_references, evaluate
        from volseg.inference.inputs import dataset_cases

        references = dataset_references(dataset_cases(trainer.datamodule, "test"))
        evaluate(self.predictions, None, self.output, class_names=pl_module.class_names,
                 tolerance_mm=self.tolerance_mm, references=references,
                 regions=pl_module.regions, metrics=self.metrics,
                 include_background=self.include_background)
