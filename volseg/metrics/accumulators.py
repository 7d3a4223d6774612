"""torchmetrics accumulators: per-class means over cases of any per-case metric, DDP-synced.

Each class keeps, per class, the sum of the defined per-case values and how many there were.
Both are summed across processes (``dist_reduce_fx="sum"``), so under DDP every rank's
``compute()`` returns the mean over all cases of all ranks, not just its own. Cases where a
class is in neither prediction nor target (NaN) are left out of that class's mean.

Distance metrics are ``inf`` when a class is in exactly one of prediction and target; averaging
``inf`` would hide every other case, so these accumulators count such a case as
``empty_penalty_mm``, by default the diagonal of the image in mm: the farthest two points of the
image can be, as the BraTS challenge scores it (373.13 mm for its 240 x 240 x 155 grid at 1 mm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from volseg.metrics.masks import check_num_classes
from volseg.metrics.overlap import dice, iou, volume_similarity
from volseg.metrics.surface import (
    Reduction,
    Spacing,
    average_reduction,
    check_tolerances,
    hausdorff_reduction,
    per_class_surface_values,
    surface_dice_reduction,
)


class PerClassMean(Metric):
    """Base: mean per class over all cases seen of ``values(pred, target, spacing)``, (K,).

    Args:
        num_classes: C, including background (class 0).
        include_background: report class 0 as entry 0.
        **kwargs: passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_classes: int, include_background: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        check_num_classes(num_classes, include_background)
        self.num_classes = num_classes
        self.include_background = include_background
        k = num_classes if include_background else num_classes - 1
        # Sums and counts, not means, so DDP can add them across processes. float64 so that
        # millions of cases still add up exactly enough.
        self.add_state(
            "value_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        """Per-case values ``(N, K)``, NaN where undefined."""
        raise NotImplementedError

    def update(self, pred: Tensor, target: Tensor, spacing: Spacing = None,
               values: Tensor | None = None) -> None:
        """Add a batch of cases: label maps (N, X, Y, Z) or one-hot (N, C, X, Y, Z).

        Args:
            pred: predicted labels.
            target: reference labels.
            spacing: voxel size in mm per array axis, for all cases or one row per case;
                ``None`` for 1 mm. Overlap metrics ignore it.
            values: this batch's `values`, when already computed (`update_surface_metrics`).
        """
        if values is None:
            values = self.values(pred, target, spacing)
        values = values.to(self.value_sum.device, torch.float64)
        defined = ~torch.isnan(values)
        self.value_sum += torch.where(defined, values, 0.0).sum(0)
        self.count += defined.sum(0)

    def compute(self) -> Tensor:
        """Per-class mean over the cases where the class was defined, (K,) float32; NaN if
        there were none. torchmetrics squeezes a one-class result to a scalar: see
        :meth:`per_class`."""
        return (self.value_sum / self.count).float()

    def per_class(self) -> Tensor:
        """:meth:`compute` as a (K,) tensor even when K is 1 (binary segmentation)."""
        return torch.atleast_1d(self.compute())


class DiceMetric(PerClassMean):
    """Per-class mean Dice over cases; arguments as :class:`PerClassMean`."""

    higher_is_better = True

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return dice(pred, target, self.num_classes, self.include_background)


class IoUMetric(PerClassMean):
    """Per-class mean IoU (Jaccard) over cases; arguments as :class:`PerClassMean`."""

    higher_is_better = True

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return iou(pred, target, self.num_classes, self.include_background)


def _image_diagonals(shape: Sequence[int], spacing: Spacing, num_cases: int) -> Tensor:
    """Length in mm of each case's image diagonal, ``(N, 1)``."""
    extent = np.asarray(shape, dtype=np.float64)
    scale = np.ones_like(extent) if spacing is None else np.asarray(spacing, dtype=np.float64)
    diagonal = np.linalg.norm(np.broadcast_to(extent * scale, (num_cases, len(extent))), axis=1)
    return torch.from_numpy(diagonal)[:, None]


class SurfaceMean(PerClassMean):
    """Base of the surface-distance accumulators: its per-case values are one reduction
    (`reduction`) of each case and class's surface distances, then `finish`ed.

    Several of them scoring the same batch share one distance computation through
    `update_surface_metrics`; ``update`` alone computes the distances for this one.
    """

    def reduction(self) -> Reduction:
        """How one case and class's ``(d_PT, d_TP)`` becomes this metric's value."""
        raise NotImplementedError

    def finish(self, values: Tensor, pred: Tensor, spacing: Spacing) -> Tensor:
        """The per-case values as accumulated; ``values`` as the reduction gave them."""
        return values

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return _surface_values([self], pred, target, spacing)[0]


def _surface_values(
    metrics: Sequence[SurfaceMean], pred: Tensor, target: Tensor, spacing: Spacing
) -> list[Tensor]:
    """Each metric's finished per-case values, from one distance computation per case and
    class. The metrics must score the same classes."""
    first = metrics[0]
    if any((m.num_classes, m.include_background) != (first.num_classes,
                                                      first.include_background)
           for m in metrics):
        raise ValueError("surface metrics scored together must score the same classes")
    reductions = {str(index): metric.reduction() for index, metric in enumerate(metrics)}
    values = per_class_surface_values(pred, target, spacing, first.num_classes,
                                      first.include_background, reductions, {})
    return [metric.finish(values[str(index)], pred, spacing)
            for index, metric in enumerate(metrics)]


def update_surface_metrics(
    metrics: Sequence[SurfaceMean], pred: Tensor, target: Tensor, spacing: Spacing = None
) -> None:
    """``metric.update(pred, target, spacing)`` for each of ``metrics``, with the surface
    distances of each case and class computed once for all of them (HD95 and surface Dice of
    a validation case cost one distance computation, not two)."""
    for metric, values in zip(metrics, _surface_values(metrics, pred, target, spacing),
                              strict=True):
        metric.update(pred, target, spacing, values=values)


class _DistanceMean(SurfaceMean):
    """A distance metric, with ``inf`` (class in one mask only) replaced by a penalty."""

    higher_is_better = False

    def __init__(
        self,
        num_classes: int,
        include_background: bool = False,
        empty_penalty_mm: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, include_background, **kwargs)
        if empty_penalty_mm is not None and empty_penalty_mm < 0:
            raise ValueError(f"empty_penalty_mm must be >= 0 or None, got {empty_penalty_mm}")
        self.empty_penalty_mm = empty_penalty_mm

    def finish(self, values: Tensor, pred: Tensor, spacing: Spacing) -> Tensor:
        values = values.double()
        if self.empty_penalty_mm is not None:
            penalty = torch.full_like(values, self.empty_penalty_mm)
        else:
            penalty = _image_diagonals(pred.shape[-3:], spacing, len(values)).expand_as(values)
        return torch.where(torch.isinf(values), penalty, values)


class HausdorffDistanceMetric(_DistanceMean):
    """Per-class mean Hausdorff distance (or HD95) in mm over cases.

    Args:
        num_classes: C, including background (class 0).
        include_background: report class 0 as entry 0.
        percentile: 95 for HD95, ``None`` for the maximum distance.
        pooled: medpy's pooled percentile instead of MONAI's larger directed one.
        empty_penalty_mm: value for a class in one mask only; ``None``: the image diagonal.
        **kwargs: passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        num_classes: int,
        include_background: bool = False,
        percentile: float | None = 95.0,
        pooled: bool = False,
        empty_penalty_mm: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, include_background, empty_penalty_mm, **kwargs)
        if percentile is not None and not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100] or None, got {percentile}")
        self.percentile = percentile
        self.pooled = pooled

    def reduction(self) -> Reduction:
        return hausdorff_reduction(self.percentile, self.pooled)


class AverageSurfaceDistanceMetric(_DistanceMean):
    """Per-class mean average symmetric surface distance in mm over cases.

    Args:
        num_classes: C, including background (class 0).
        include_background: report class 0 as entry 0.
        empty_penalty_mm: value for a class in one mask only; ``None``: the image diagonal.
        **kwargs: passed to ``torchmetrics.Metric``.
    """

    def reduction(self) -> Reduction:
        return average_reduction(symmetric=True)


class SurfaceDiceMetric(SurfaceMean):
    """Per-class mean normalised surface Dice at ``tolerance_mm`` over cases.

    Args:
        num_classes: C, including background (class 0).
        tolerance_mm: one tolerance, or one per scored class, in mm.
        include_background: report class 0 as entry 0.
        **kwargs: passed to ``torchmetrics.Metric``.

    Raises:
        ValueError: on a NaN, infinite or negative tolerance, or a tolerance count that is
            neither 1 nor the number of scored classes.
    """

    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        tolerance_mm: float | Sequence[float],
        include_background: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, include_background, **kwargs)
        # Checked now, not at the first validation after an epoch of training: a NaN
        # tolerance would otherwise score every case 0 without a word.
        check_tolerances(tolerance_mm, len(self.value_sum))
        self.tolerance_mm = tolerance_mm

    def reduction(self) -> Reduction:
        return surface_dice_reduction(self.tolerance_mm, len(self.value_sum))


class VolumeSimilarityMetric(PerClassMean):
    """Per-class mean volume similarity ``1 - ||P|-|T|| / (|P|+|T|)`` over cases; arguments as
    :class:`PerClassMean`. Compares volumes only: see :func:`volseg.metrics.volume_similarity`.
    """

    higher_is_better = True

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return volume_similarity(pred, target, self.num_classes, self.include_background)
