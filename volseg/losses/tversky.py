"""Tversky loss (Salehi et al. 2017) and focal Tversky loss (Abraham & Khan 2019).

For each kept class ``c``, with softmax probabilities ``p_c`` and one-hot target ``g_c``:
``TP = sum(p_c * g_c)``, ``FP = sum(p_c * (1 - g_c))``, ``FN = sum((1 - p_c) * g_c)`` and the
Tversky index ``TI_c = (TP + smooth_nr) / (TP + alpha * FP + beta * FN + smooth_dr)``.
``alpha`` weighs false positives and ``beta`` false negatives, as in Salehi et al. and MONAI;
``alpha = beta = 0.5`` gives the soft Dice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from volseg.losses.dice import SoftOverlapLoss, non_negative


class TverskyLoss(SoftOverlapLoss):
    """Tversky loss, ``1 - mean TI_c`` over the kept classes (and samples unless ``batch_dice``).

    Salehi et al. 2017, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks" (MLMI), eq. 3, with a Tversky index per class as in the module
    docstring. Raising ``beta`` above ``alpha`` trades precision for recall on small
    structures; the paper chose ``alpha=0.3, beta=0.7``, the default here.
    Equal to MONAI's ``TverskyLoss(softmax=True, to_onehot_y=True, ...)`` with the matching
    options (``batch_dice`` is MONAI's ``batch``). Computed in float32 even under autocast.

    Args:
        include_background: keep class 0 in the mean; left out by default, as for Dice.
        batch_dice: sum TP, FP and FN over the whole batch before the ratio.
        smooth_nr: added to the numerator, so a class absent from both scores 1.
        smooth_dr: added to the denominator, to avoid dividing by zero.
        alpha: weight on false positives, >= 0.
        beta: weight on false negatives, >= 0.
        ignore_index: target value whose voxels contribute nothing (sparse annotation);
            their gradient is exactly zero.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        alpha: float = 0.3,
        beta: float = 0.7,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(include_background, batch_dice, smooth_nr, smooth_dr, ignore_index)
        self.alpha = non_negative(alpha, "alpha")
        self.beta = non_negative(beta, "beta")

    def tversky_index(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return ``TI_c``, (N, C') per sample and kept class, or (C',) with ``batch_dice``."""
        probs, onehot, dims = self.class_maps(logits, target)
        true_pos = (probs * onehot).sum(dims)
        # onehot is 0/1, so sum(p * (1 - g)) = sum(p) - TP and sum((1 - p) * g) = sum(g) - TP,
        # which needs no further volume-sized tensors.
        false_pos = probs.sum(dims) - true_pos
        false_neg = onehot.sum(dims) - true_pos
        return (true_pos + self.smooth_nr) / (
            true_pos + self.alpha * false_pos + self.beta * false_neg + self.smooth_dr
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        return (1.0 - self.tversky_index(logits, target)).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss, the mean over kept classes of ``(1 - TI_c) ** (1 / gamma)``.

    Abraham & Khan 2019, "A novel focal Tversky loss function with improved attention U-Net for
    lesion segmentation" (ISBI), eq. 4, in the paper's convention: the exponent is
    ``1 / gamma``. With ``gamma > 1`` the exponent is below 1, which raises a small
    ``1 - TI_c`` most and steepens the slope there, so the loss keeps pushing as a class nears
    a perfect score. The paper used ``gamma`` in [1, 3] and found 4/3 best (the default);
    ``gamma = 1`` is :class:`TverskyLoss`.
    The paper's ``alpha`` weighs false negatives (0.7 there); here ``alpha`` weighs false
    positives as in :class:`TverskyLoss`, so the paper's setting is ``alpha=0.3, beta=0.7``,
    the default. The paper sums over classes; the mean (over samples too unless
    ``batch_dice``) keeps the scale independent of C, as for Dice.

    Args:
        include_background: keep class 0 in the mean; left out by default, as for Dice.
        batch_dice: sum TP, FP and FN over the whole batch before the ratio.
        smooth_nr: added to the numerator of TI.
        smooth_dr: added to the denominator of TI.
        alpha: weight on false positives, >= 0 (the paper's ``beta``).
        beta: weight on false negatives, >= 0 (the paper's ``alpha``).
        gamma: > 0; the loss per class is ``(1 - TI_c) ** (1 / gamma)``.
        ignore_index: target value whose voxels contribute nothing; their gradient is zero.
    """

    def __init__(
        self,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4 / 3,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__(
            include_background, batch_dice, smooth_nr, smooth_dr, alpha, beta, ignore_index
        )
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        distance = 1.0 - self.tversky_index(logits, target)
        # x ** (1/gamma) has an infinite slope at x = 0 when gamma > 1, so a perfectly segmented
        # class would give an inf/NaN gradient; a TI above 1 (smooth_nr > smooth_dr) would give
        # a NaN power. Clamping to the smallest normal float changes nothing else: in float32,
        # 1 - TI is either 0 or at least 2**-24, and tiny ** (1/gamma) is ~0 as a loss.
        distance = distance.clamp_min(torch.finfo(distance.dtype).tiny)
        return (distance ** (1.0 / self.gamma)).mean()
