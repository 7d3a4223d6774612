"""Segmentation metrics: functional per-case values and torchmetrics accumulators."""

from volseg.metrics.accumulators import (
    AverageSurfaceDistanceMetric,
    DiceMetric,
    HausdorffDistanceMetric,
    IoUMetric,
    PerClassMean,
    SurfaceDiceMetric,
    SurfaceMean,
    VolumeSimilarityMetric,
    update_surface_metrics,
)
from volseg.metrics.overlap import dice, iou, volume_similarity
from volseg.metrics.surface import (
    average_surface_distance,
    hausdorff_distance,
    surface_dice,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "AverageSurfaceDistanceMetric",
    "DiceMetric",
    "HausdorffDistanceMetric",
    "IoUMetric",
    "PerClassMean",
    "SurfaceDiceMetric",
    "SurfaceMean",
    "VolumeSimilarityMetric",
    "average_surface_distance",
    "dice",
    "hausdorff_distance",
    "iou",
    "surface_dice",
    "surface_distances",
    "surface_metrics",
    "update_surface_metrics",
    "volume_similarity",
]
