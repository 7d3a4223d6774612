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
