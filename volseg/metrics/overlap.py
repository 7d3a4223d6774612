"""Overlap metrics per case and per class: Dice, IoU (Jaccard) and volume similarity.

Inputs are hard segmentations, either integer label maps ``(N, X, Y, Z)`` / ``(X, Y, Z)`` or
one-hot / boolean masks ``(N, C, X, Y, Z)`` with ``C == num_classes``. Results are
``(N, K)`` tensors, ``K = num_classes`` with background and ``num_classes - 1`` without it
(column ``k`` is then class ``k + 1``). They count voxels, so they need no voxel spacing.

Empty-class convention (as nnU-Net's evaluation and MONAI's ``ignore_empty=True``):

- class absent from both prediction and target in a case: NaN, the value is undefined, and
  :class:`DiceMetric` leaves it out of the class mean (``torch.nanmean`` does the same);
- class absent from exactly one of them: Dice = IoU = volume similarity = 0.

Definitions, with ``P`` and ``T`` the predicted and target voxel sets of one class:
Dice ``2|P∩T| / (|P|+|T|)`` (Dice 1945), IoU ``|P∩T| / |P∪T|`` (Jaccard 1912), and volume
similarity ``1 - ||P|-|T|| / (|P|+|T|)`` (Taha & Hanbury 2015, eq. 29).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


def _as_one_hot(x: Tensor, num_classes: int, name: str) -> Tensor:
    """Return a boolean (N, C, X, Y, Z) one-hot tensor from a label map or one-hot input."""
    if x.ndim == 5:
        if x.shape[1] != num_classes:
            raise ValueError(
                f"{name} looks one-hot (N, C, X, Y, Z) but C={x.shape[1]} != "
                f"num_classes={num_classes}"
            )
        return x > 0.5 if torch.is_floating_point(x) else x != 0
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be a label map (N, X, Y, Z) or (X, Y, Z), or one-hot (N, C, X, Y, Z); "
            f"got shape {tuple(x.shape)}"
        )
    if torch.is_floating_point(x):
        # A float 4-D tensor may as well be unbatched probabilities (C, X, Y, Z); refuse to guess.
        raise ValueError(f"{name} label map must have an integer dtype, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    x = x.long()
    if x.numel() and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(
            f"{name} labels must lie in [0, num_classes={num_classes}), "
            f"got range [{int(x.min())}, {int(x.max())}]"
        )
    return F.one_hot(x, num_classes).movedim(-1, 1).bool()


def _counts(
    pred: Tensor, target: Tensor, num_classes: int, include_background: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Return |P∩T|, |P| and |T| per case and kept class, each (N, K) float32."""
    if num_classes < (1 if include_background else 2):
        raise ValueError(
            f"num_classes must be >= {1 if include_background else 2} with "
            f"include_background={include_background}, got {num_classes}"
        )
    p = _as_one_hot(pred, num_classes, "pred")
    t = _as_one_hot(target, num_classes, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if not include_background:
        p, t = p[:, 1:], t[:, 1:]
    dims = (2, 3, 4)
    # Integer counts first: exact, then one conversion.
    intersection = (p & t).sum(dims).float()
    return intersection, p.sum(dims).float(), t.sum(dims).float()


def dice(
    pred: Tensor, target: Tensor, num_classes: int, include_background: bool = False
) -> Tensor:
    """Dice coefficient per case and class, ``(N, K)``; NaN where the class is in neither.

    Args:
        pred: predicted labels (N, X, Y, Z) / (X, Y, Z), or one-hot (N, C, X, Y, Z).
        target: reference labels, same forms.
        num_classes: C, including background (class 0).
        include_background: keep class 0 as column 0.
    """
    intersection, p, t = _counts(pred, target, num_classes, include_background)
    # 0 / 0 -> NaN is exactly the "undefined" convention of the module docstring.
    return 2.0 * intersection / (p + t)


def iou(pred: Tensor, target: Tensor, num_classes: int, include_background: bool = False) -> Tensor:
    """Intersection over union (Jaccard) per case and class, ``(N, K)``; args as :func:`dice`."""
    intersection, p, t = _counts(pred, target, num_classes, include_background)
    return intersection / (p + t - intersection)


def volume_similarity(
    pred: Tensor, target: Tensor, num_classes: int, include_background: bool = False
) -> Tensor:
    """``1 - ||P|-|T|| / (|P|+|T|)`` per case and class, ``(N, K)``; arguments as :func:`dice`.

    Only compares volumes (1 for equal volumes anywhere in the image). SimpleITK's
    ``GetVolumeSimilarity`` is the signed ``2(|P|-|T|)/(|P|+|T|)``; this is ``1 - |that| / 2``.
    """
    _, p, t = _counts(pred, target, num_classes, include_background)
    return 1.0 - (p - t).abs() / (p + t)


class _PerClassOverlap(Metric):
    """Mean of a per-case overlap value per class over all cases seen, NaN-skipping."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _fn: Callable[[Tensor, Tensor, int, bool], Tensor]

    def __init__(self, num_classes: int, include_background: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < (1 if include_background else 2):
            raise ValueError(
                f"num_classes must be >= {1 if include_background else 2} with "
                f"include_background={include_background}, got {num_classes}"
            )
        self.num_classes = num_classes
        self.include_background = include_background
        k = num_classes if include_background else num_classes - 1
        # Sums and counts, not means, so DDP can add them across processes.
        self.add_state("value_sum", default=torch.zeros(k), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of cases: label maps (N, X, Y, Z) or one-hot (N, C, X, Y, Z)."""
        values = type(self)._fn(pred, target, self.num_classes, self.include_background)
        defined = ~torch.isnan(values)
        self.value_sum += torch.where(defined, values, 0.0).sum(0).to(self.value_sum.dtype)
        self.count += defined.sum(0)

    def compute(self) -> Tensor:
        """Per-class mean over the cases where the class was defined, (K,); NaN if none."""
        return self.value_sum / self.count


class DiceMetric(_PerClassOverlap):
    """Per-class mean Dice over cases, (K,), leaving out cases where a class is in neither map.

    Args:
        num_classes: C, including background (class 0).
        include_background: report class 0 as entry 0.
        **kwargs: passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).
    """

    _fn = staticmethod(dice)


class IoUMetric(_PerClassOverlap):
    """Per-class mean IoU (Jaccard) over cases; same arguments and convention as DiceMetric."""

    _fn = staticmethod(iou)
