"""Soft Dice loss on softmax probabilities (Milletari et al. 2016, V-Net, eq. 1 without squares).

The loss follows the per-class formulation used by nnU-Net (Isensee et al. 2021) and MONAI:
for each kept class ``c`` the soft Dice is ``(2 * sum(p_c * g_c) + smooth_nr) /
(sum(g_c) + sum(p_c) + smooth_dr)`` where ``p_c`` are softmax probabilities and ``g_c`` the
one-hot target; the loss is ``1 - mean`` over classes (and over samples unless ``batch_dice``).
:class:`SoftOverlapLoss` prepares those inputs once for Dice and the Tversky losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def non_negative(value: float, name: str) -> float:
    """Return ``value`` as a float, after checking it is >= 0.

    Raises:
        ValueError: naming ``name`` if ``value`` is negative.
    """
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def as_voxel_map(logits: Tensor, values: Tensor, name: str) -> Tensor:
    """Return ``values``, one number a voxel, as ``(N, *spatial)`` matching ``logits``.

    Args:
        logits: ``(N, C, *spatial)`` network output.
        values: ``(N, *spatial)`` or ``(N, 1, *spatial)``, e.g. labels or voxel weights.
        name: the argument's name, for the error message.

    Raises:
        ValueError: if the shapes do not fit together.
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    if values.ndim == logits.ndim and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"{name} must be (N, *spatial) or (N, 1, *spatial) matching logits (N, C, *spatial); "
            f"got {name} {tuple(values.shape)} and logits {tuple(logits.shape)}"
        )
    return values


def as_label_map(logits: Tensor, target: Tensor) -> Tensor:
    """Return ``target`` as an integer label map ``(N, *spatial)`` matching ``logits``.

    Args:
        logits: ``(N, C, *spatial)`` network output.
        target: ``(N, *spatial)`` or ``(N, 1, *spatial)`` integer class labels.

    Raises:
        ValueError: if the shapes do not fit together or ``target`` is floating point.
    """
    target = as_voxel_map(logits, target, "target")
    if torch.is_floating_point(target):
        raise ValueError(f"target must hold integer class labels, got dtype {target.dtype}")
    return target.long()


def one_hot_with_mask(
    labels: Tensor, num_classes: int, ignore_index: int | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """One-hot encode ``labels`` (N, *spatial) to (N, C, *spatial) and return the valid mask.

    Voxels labelled ``ignore_index`` get an all-zero one-hot vector; the mask (N, 1, *spatial),
    1 where the voxel counts and 0 where it is ignored, is ``None`` when nothing is ignored.
    """
    mask = None
    if ignore_index is not None:
        valid = labels != ignore_index
        # ignore_index may lie outside [0, C) (e.g. 255), which one_hot would reject.
        labels = labels.masked_fill(~valid, 0)
        mask = valid.unsqueeze(1).to(dtype)
    onehot = F.one_hot(labels, num_classes).movedim(-1, 1).to(dtype)
    if mask is not None:
        onehot = onehot * mask
    return onehot, mask


class SoftOverlapLoss(nn.Module):
    """Base of the losses that compare softmax probabilities with the one-hot target per class.

    Holds the arguments :class:`DiceLoss` and :class:`~volseg.losses.TverskyLoss` share and
    prepares their inputs in one place; subclasses only combine the per-class sums.

    Args:
        include_background: keep class 0.
        batch_dice: sum over the batch axis too (MONAI's ``batch``).
        smooth_nr: added to the numerator.
        smooth_dr: added to the denominator.
        ignore_index: target value whose voxels contribute nothing.
    """

    def __init__(
        self,
        include_background: bool,
        batch_dice: bool,
        smooth_nr: float,
        smooth_dr: float,
        ignore_index: int | None,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.batch_dice = batch_dice
        self.smooth_nr = non_negative(smooth_nr, "smooth_nr")
        self.smooth_dr = non_negative(smooth_dr, "smooth_dr")
        self.ignore_index = ignore_index

    def class_maps(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, list[int]]:
        """Return probabilities and one-hot target, both (N, C', *spatial), and the sum axes.

        ``C'`` is C, or C - 1 without the background. Ignored voxels are 0 in both maps. Summing
        over the returned axes gives (N, C') per-sample sums, or (C',) with ``batch_dice``.
        """
        num_classes = logits.shape[1] if logits.ndim >= 2 else 0
        if num_classes < 2:
            raise ValueError(
                f"{type(self).__name__} needs logits with C >= 2 channels, got {num_classes}"
            )
        labels = as_label_map(logits, target)
        # float32 so fp16/bf16 autocast cannot overflow the sums.
        probs = torch.softmax(logits.float(), dim=1)
        onehot, mask = one_hot_with_mask(labels, num_classes, self.ignore_index, probs.dtype)
        if mask is not None:
            # Multiplying by 0 (not indexing) keeps shapes and gives an exactly-zero gradient.
            probs = probs * mask
        if not self.include_background:
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        dims = list(range(2, probs.ndim))
        if self.batch_dice:
            dims = [0, *dims]
        return probs, onehot, dims


class DiceLoss(SoftOverlapLoss):
    """Soft Dice loss, ``1 - mean soft Dice`` over the kept classes.

    Equal to MONAI's ``DiceLoss(softmax=True, to_onehot_y=True, ...)`` with the matching options
    (``batch_dice`` is MONAI's ``batch``). Computed in float32 even under autocast.

    Args:
        include_background: keep class 0 in the mean. nnU-Net leaves it out (default).
        batch_dice: sum intersection and volumes over the whole batch before taking the ratio,
            as nnU-Net's ``batch_dice``; steadier when a patch holds little foreground.
        smooth_nr: added to the numerator, so a class absent from both gives Dice 1.
        smooth_dr: added to the denominator, to avoid dividing by zero.
        squared_pred: use ``sum(p**2)`` in the denominator (the V-Net paper's form).
        ignore_index: target value whose voxels contribute nothing (sparse annotation);
            their gradient is exactly zero.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        squared_pred: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(include_background, batch_dice, smooth_nr, smooth_dr, ignore_index)
        self.squared_pred = squared_pred

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        probs, onehot, dims = self.class_maps(logits, target)
        intersection = (probs * onehot).sum(dims)
        pred_volume = (probs * probs if self.squared_pred else probs).sum(dims)
        # onehot is 0/1, so its square equals itself.
        target_volume = onehot.sum(dims)
        dice = (2.0 * intersection + self.smooth_nr) / (
            pred_volume + target_volume + self.smooth_dr
        )
        return 1.0 - dice.mean()
