"""Overlap metrics per case and per class: Dice, IoU (Jaccard) and volume similarity.

Inputs are hard segmentations, either integer label maps ``(N, X, Y, Z)`` / ``(X, Y, Z)`` or
one-hot / boolean masks ``(N, C, X, Y, Z)`` with ``C == num_classes``. Results are
``(N, K)`` tensors, ``K = num_classes`` with background and ``num_classes - 1`` without it
(column ``k`` is then class ``k + 1``). They count voxels, so they need no voxel spacing.

Empty-class conventions (nnU-Net's evaluation), for one case and class:

- class in neither prediction nor target: NaN by default, the value is undefined and
  :class:`DiceMetric` leaves it out of the class mean (``torch.nanmean`` does the same);
  ``both_empty=1.0`` scores it as a perfect match instead;
- class in exactly one of them: Dice = IoU = volume similarity = 0.

MONAI differs when only the target is empty. Its ``DiceMetric`` / ``MeanIoU`` with
``ignore_empty=True`` (the default) give NaN for an empty target whatever the prediction, so a
false positive in a case without the class goes unscored, where volseg gives 0. With
``ignore_empty=False`` they give 1 if the prediction is empty too and 0 otherwise, which is
volseg with ``both_empty=1.0``. With a non-empty target all three agree.

Definitions, with ``P`` and ``T`` the predicted and target voxel sets of one class:
Dice ``2|P∩T| / (|P|+|T|)`` (Dice 1945), IoU ``|P∩T| / |P∪T|`` (Jaccard 1912), and volume
similarity ``1 - ||P|-|T|| / (|P|+|T|)`` (Taha & Hanbury 2015, eq. 29).
"""

from __future__ import annotations

import math

from torch import Tensor

from volseg.metrics.masks import paired_masks


def _counts(
    pred: Tensor, target: Tensor, num_classes: int, include_background: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Return |P∩T|, |P| and |T| per case and kept class, each (N, K) float32."""
    p, t = paired_masks(pred, target, num_classes, include_background)
    dims = (2, 3, 4)
    # Integer counts first: exact, then one conversion.
    intersection = (p & t).sum(dims).float()
    return intersection, p.sum(dims).float(), t.sum(dims).float()


def _fill_both_empty(values: Tensor, p: Tensor, t: Tensor, both_empty: float) -> Tensor:
    """``values`` with ``both_empty`` where the class is in neither mask (``|P| + |T| = 0``)."""
    if math.isnan(both_empty):
        return values  # 0 / 0 already left NaN there
    return values.masked_fill(p + t == 0, both_empty)


def dice(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    include_background: bool = False,
    *,
    both_empty: float = math.nan,
) -> Tensor:
    """Dice coefficient per case and class, ``(N, K)``; ``both_empty`` where the class is in
    neither.

    Args:
        pred: predicted labels (N, X, Y, Z) / (X, Y, Z), or one-hot (N, C, X, Y, Z); see
            :func:`volseg.metrics.masks.class_masks` for the forms refused.
        target: reference labels, same forms.
        num_classes: C, including background (class 0).
        include_background: keep class 0 as column 0.
        both_empty: value for a class in neither mask: NaN (undefined, the default) or e.g.
            1.0 to count it as a perfect match.
    """
    intersection, p, t = _counts(pred, target, num_classes, include_background)
    return _fill_both_empty(2.0 * intersection / (p + t), p, t, both_empty)


def iou(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    include_background: bool = False,
    *,
    both_empty: float = math.nan,
) -> Tensor:
    """Intersection over union (Jaccard) per case and class, ``(N, K)``; args as :func:`dice`."""
    intersection, p, t = _counts(pred, target, num_classes, include_background)
    return _fill_both_empty(intersection / (p + t - intersection), p, t, both_empty)


def volume_similarity(
    pred: Tensor,
    target: Tensor,
    num_classes: int,
    include_background: bool = False,
    *,
    both_empty: float = math.nan,
) -> Tensor:
    """``1 - ||P|-|T|| / (|P|+|T|)`` per case and class, ``(N, K)``; arguments as :func:`dice`.

    Only compares volumes (1 for equal volumes anywhere in the image). SimpleITK's
    ``GetVolumeSimilarity`` is the signed ``2(|P|-|T|)/(|P|+|T|)``; this is ``1 - |that| / 2``.
    """
    _, p, t = _counts(pred, target, num_classes, include_background)
    return _fill_both_empty(1.0 - (p - t).abs() / (p + t), p, t, both_empty)
