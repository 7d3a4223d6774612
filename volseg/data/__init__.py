"""Datasets on disk to training batches: adapters, preprocessing, cache, splits, sampling."""

from volseg.data.datamodule import SegmentationDataModule
from volseg.data.preprocess import Preprocessor

__all__ = ["Preprocessor", "SegmentationDataModule"]
