"""Segmentation metrics: functional per-case values and torchmetrics accumulators."""

from volseg.metrics.overlap import DiceMetric, IoUMetric, dice, iou, volume_similarity

__all__ = ["DiceMetric", "IoUMetric", "dice", "iou", "volume_similarity"]
