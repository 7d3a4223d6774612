"""Losses built from other losses: Dice + CE, any weighted sum, and deep supervision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from volseg.losses.cross_entropy import CrossEntropyLoss
from volseg.losses.dice import DiceLoss, non_negative


def _check_weights(weights: Sequence[float], name: str) -> list[float]:
    values = [float(w) for w in weights]
    if any(w < 0 for w in values):
        raise ValueError(f"{name} must all be >= 0, got {values}")
    return values


class DiceCELoss(nn.Module):
    """``dice_weight * DiceLoss + ce_weight * CrossEntropyLoss``, nnU-Net's default loss.

    nnU-Net (Isensee et al. 2021, Nat. Methods, section "Training") trains every configuration
    with the unweighted sum of soft Dice (background excluded) and cross-entropy. Equal to MONAI's
    ``DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice, lambda_ce)`` with the matching
    options, with one deliberate difference: class ``weight`` here weights only the
    cross-entropy, whereas MONAI also scales each class's Dice term by it.

    Args:
        dice_weight: factor on the Dice term (MONAI's ``lambda_dice``).
        ce_weight: factor on the cross-entropy term (MONAI's ``lambda_ce``).
        include_background: keep class 0 in the Dice mean (CE always covers every class).
        batch_dice: Dice over the whole batch at once, see :class:`DiceLoss`.
        smooth_nr: Dice numerator smoothing.
        smooth_dr: Dice denominator smoothing.
        squared_pred: squared probabilities in the Dice denominator.
        weight: per-class cross-entropy weights (length C), or ``None``.
        ignore_index: target value whose voxels contribute to neither term.
        label_smoothing: cross-entropy label smoothing in [0, 1).
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        include_background: bool = False,
        batch_dice: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        squared_pred: bool = False,
        weight: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.dice_weight = non_negative(dice_weight, "dice_weight")
        self.ce_weight = non_negative(ce_weight, "ce_weight")
        self.dice = DiceLoss(
            include_background=include_background,
            batch_dice=batch_dice,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            squared_pred=squared_pred,
            ignore_index=ignore_index,
        )
        self.ce = CrossEntropyLoss(
            weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
        )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * self.ce(
            logits, target
        )


class WeightedSum(nn.Module):
    """``sum_i weights[i] * losses[i](logits, target)`` for any losses.

    From Hydra, give ``losses`` as a mapping or list of ``_target_`` configs; recursive
    instantiation builds the modules before they arrive here.

    Args:
        losses: loss modules, by name (a mapping) or in order (a sequence).
        weights: one non-negative factor per loss, in the same order.
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module] | Sequence[nn.Module],
        weights: Sequence[float],
    ) -> None:
        super().__init__()
        if isinstance(losses, Mapping):
            self.losses: nn.ModuleDict | nn.ModuleList = nn.ModuleDict(
                {str(k): v for k, v in losses.items()}
            )
        else:
            self.losses = nn.ModuleList(list(losses))
        if len(self.losses) == 0:
            raise ValueError("losses must hold at least one loss module")
        self.weights = _check_weights(weights, "weights")
        if len(self.weights) != len(self.losses):
            raise ValueError(
                f"weights has {len(self.weights)} entries but losses has {len(self.losses)}"
            )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the weighted sum of every loss on the same inputs."""
        modules = self.losses.values() if isinstance(self.losses, nn.ModuleDict) else self.losses
        total = None
        for weight, loss in zip(self.weights, modules, strict=True):
            term = weight * loss(logits, target)
            total = term if total is None else total + term
        return total


class DeepSupervisionLoss(nn.Module):
    """Apply ``loss`` to every decoder level's output and take a weighted sum.

    Follows nnU-Net's deep supervision (Isensee et al. 2021): each lower-resolution output is
    compared with the target downsampled to its size by nearest neighbour (so labels, including
    ``ignore_index``, stay valid values), and level ``i`` (0 = full resolution) weighs ``1/2**i``,
    normalised to sum to 1. nnU-Net also zeroes the lowest level's weight; pass ``weights`` to
    do so. A plain tensor passes straight to ``loss``, so validation code needs no special case.

    Args:
        loss: the loss applied at each level, ``loss(logits, target) -> scalar``.
        weights: one non-negative factor per level, used as given; ``None`` for the halving
            weights above (their count follows the number of outputs).
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else _check_weights(weights, "weights")
        if self.weights is not None and len(self.weights) == 0:
            raise ValueError("weights must hold at least one entry, or be None")

    def level_weights(self, num_levels: int) -> list[float]:
        """Return the weight of each of ``num_levels`` outputs, full resolution first."""
        if self.weights is not None:
            if len(self.weights) != num_levels:
                raise ValueError(
                    f"weights has {len(self.weights)} entries but got {num_levels} outputs"
                )
            return self.weights
        raw = [0.5**i for i in range(num_levels)]
        return [w / sum(raw) for w in raw]

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        """Return the loss for one tensor, or the weighted sum over a list of level outputs."""
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        if len(outputs) == 0:
            raise ValueError("outputs must hold at least one tensor")
        # Work on (N, 1, *spatial) so F.interpolate sees a channel axis.
        channel_target = target if target.ndim == outputs[0].ndim else target.unsqueeze(1)
        total = None
        for weight, logits in zip(self.level_weights(len(outputs)), outputs, strict=True):
            level_target = channel_target
            if level_target.shape[2:] != logits.shape[2:]:
                # float32 holds every integer label up to 2**24 exactly; "nearest-exact" picks
                # the voxel whose centre is closest, unlike "nearest" which shifts by half a voxel.
                level_target = F.interpolate(
                    channel_target.float(), size=logits.shape[2:], mode="nearest-exact"
                ).long()
            term = weight * self.loss(logits, level_target)
            total = term if total is None else total + term
        return total
