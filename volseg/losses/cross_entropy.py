"""Voxel-wise cross-entropy over classes, with class weights and ignored (unlabelled) voxels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from volseg.losses.dice import as_label_map

# F.cross_entropy's own default; used when nothing is to be ignored.
_TORCH_DEFAULT_IGNORE = -100


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy of softmax(logits) against integer labels, as ``F.cross_entropy``.

    Equal to ``F.cross_entropy(logits, target, weight, ignore_index, label_smoothing)`` with
    ``reduction="mean"`` (the mean is weighted by ``weight[target]``), except that a patch with
    every voxel ignored gives 0 instead of NaN, which happens with sparse annotation.
    Computed in float32 even under autocast.

    Args:
        weight: one weight per class (length C), e.g. to up-weight rare classes; ``None`` for 1s.
            Stored as a buffer so it follows ``.to(device)``.
        ignore_index: target value whose voxels contribute nothing; their gradient is zero.
        label_smoothing: in [0, 1); mixes the one-hot target with a uniform distribution
            (Szegedy et al. 2016).
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Sequence[float] | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        weight_tensor = None
        if weight is not None:
            weight_tensor = torch.as_tensor([float(w) for w in weight], dtype=torch.float32)
            if weight_tensor.ndim != 1 or len(weight_tensor) == 0 or (weight_tensor < 0).any():
                raise ValueError(
                    f"weight must be a non-empty sequence of >= 0 floats, got {weight}"
                )
        # Not persistent: the weights come from the config, and a checkpoint trained without them
        # must still load into a module built with them (and vice versa).
        self.register_buffer("weight", weight_tensor, persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        labels = as_label_map(logits, target)
        logits = logits.float()
        num_classes = logits.shape[1]
        weight = self.weight
        if weight is not None:
            if len(weight) != num_classes:
                raise ValueError(
                    f"weight has {len(weight)} entries but logits have C={num_classes} classes"
                )
            weight = weight.float()
        ignore = _TORCH_DEFAULT_IGNORE if self.ignore_index is None else self.ignore_index
        per_voxel = F.cross_entropy(
            logits,
            labels,
            weight=weight,
            ignore_index=ignore,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        # The mean's denominator as F.cross_entropy(reduction="mean") forms it: the summed weight
        # of the counted voxels. Clamped so an all-ignored patch gives 0, not 0/0, without a
        # host-device sync to test for it.
        valid = labels != ignore
        if weight is None:
            denominator = valid.sum().to(per_voxel.dtype)
        else:
            denominator = (weight[labels.masked_fill(~valid, 0)] * valid).sum()
        return per_voxel.sum() / denominator.clamp_min(torch.finfo(per_voxel.dtype).tiny)
