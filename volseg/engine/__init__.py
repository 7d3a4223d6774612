"""Training machinery: the LightningModule, callbacks and the run driver."""

from volseg.engine.module import SegmentationModule
from volseg.engine.prediction_writer import TestPredictionWriter

__all__ = ["SegmentationModule", "TestPredictionWriter"]
