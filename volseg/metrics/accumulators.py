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
    Spacing,
    average_surface_distance,
    check_tolerances,
    hausdorff_distance,
)
from volseg.metrics.surface import surface_dice as surface_dice_fn


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

    def update(self, pred: Tensor, target: Tensor, spacing: Spacing = None) -> None:
        """Add a batch of cases: label maps (N, X, Y, Z) or one-hot (N, C, X, Y, Z).

        Args:
            pred: predicted labels.
            target: reference labels.
            spacing: voxel size in mm per array axis, for all cases or one row per case;
                ``None`` for 1 mm. Overlap metrics ignore it.
        """
        values = self.values(pred, target, spacing).to(self.value_sum.device, torch.float64)
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


class _DistanceMean(PerClassMean):
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

    def distances(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        raise NotImplementedError

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        values = self.distances(pred, target, spacing).double()
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

    def distances(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return hausdorff_distance(
            pred,
            target,
            spacing,
            self.percentile,
            pooled=self.pooled,
            num_classes=self.num_classes,
            include_background=self.include_background,
        )


class AverageSurfaceDistanceMetric(_DistanceMean):
    """Per-class mean average symmetric surface distance in mm over cases.

    Args:
        num_classes: C, including background (class 0).
        include_background: report class 0 as entry 0.
        empty_penalty_mm: value for a class in one mask only; ``None``: the image diagonal.
        **kwargs: passed to ``torchmetrics.Metric``.
    """

    def distances(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return average_surface_distance(
            pred,
            target,
            spacing,
            num_classes=self.num_classes,
            include_background=self.include_background,
        )


class SurfaceDiceMetric(PerClassMean):
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

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return surface_dice_fn(
            pred,
            target,
            spacing,
            self.tolerance_mm,
            num_classes=self.num_classes,
            include_background=self.include_background,
        )


class VolumeSimilarityMetric(PerClassMean):
    """Per-class mean volume similarity ``1 - ||P|-|T|| / (|P|+|T|)`` over cases; arguments as
    :class:`PerClassMean`. Compares volumes only: see :func:`volseg.metrics.volume_similarity`.
    """

    higher_is_better = True

    def values(self, pred: Tensor, target: Tensor, spacing: Spacing) -> Tensor:
        return volume_similarity(pred, target, self.num_classes, self.include_background)
