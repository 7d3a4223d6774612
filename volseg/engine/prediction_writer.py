"""Write each test case's prediction as NIfTI in the case's original geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from volseg.inference.writer import Prediction, write_prediction
from volseg.io import Volume


class TestPredictionWriter(pl.Callback):
    """Saves ``<case_id>.nii.gz`` label maps from `SegmentationModule.test_step` outputs,
    through the writer ``volseg predict`` uses (`volseg.inference.writer.write_prediction`).

    Args:
        dirpath: output folder (the run's ``predictions/`` by default).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        # Every rank writes the cases it tested: under DDP they are disjoint.
        if not outputs:
            return
        geometry = outputs["geometry"]
        labels = Volume(outputs["prediction"], geometry["spacing"], geometry["origin"],
                        geometry["direction"])
        write_prediction(Prediction(labels), self.dirpath, outputs["case_id"])
