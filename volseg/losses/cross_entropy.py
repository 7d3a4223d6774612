"""Voxel-wise cross-entropy over classes, with class weights, voxel weights and ignored voxels.

:class:`CrossEntropyLoss` is ``F.cross_entropy``; :class:`SparseWeightedCrossEntropyLoss` is
the 3D U-Net's weighted softmax loss for sparse annotation. Both reduce through
:func:`weighted_cross_entropy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from volseg.losses.dice import as_label_map, as_voxel_map

# F.cross_entropy's own default; used when nothing is to be ignored.
_TORCH_DEFAULT_IGNORE = -100


def class_weight_tensor(weights: Sequence[float] | None, name: str) -> Tensor | None:
    """Return ``weights`` as a float32 (C,) tensor after checking it, or ``None``.

    Raises:
        ValueError: naming ``name`` if ``weights`` is empty or holds a negative value.
    """
    if weights is None:
        return None
    tensor = torch.as_tensor([float(w) for w in weights], dtype=torch.float32)
    if tensor.ndim != 1 or len(tensor) == 0 or (tensor < 0).any():
        raise ValueError(f"{name} must be a non-empty sequence of >= 0 floats, got {weights}")
    return tensor


def balanced_class_weights(labels: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Inverse-frequency class weights over the labelled voxels of the whole batch.

    ``w_c = n_labelled / (C_present * n_c)`` for each class present, 0 for an absent one, so
    every present class carries the same total weight ``n_labelled / C_present`` and the
    weights of all labelled voxels sum to ``n_labelled``.

    Args:
        labels: (N, *spatial) integer labels in ``0..C-1`` or ``ignore_index``.
        num_classes: C.
        ignore_index: label of unannotated voxels, not counted; ``None``: every voxel counts.

    Returns:
        (C,) float32 weights on the labels' device.
    """
    labels = labels.flatten()
    if ignore_index is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    else:
        valid = labels != ignore_index
    # Integer counts, exact at any volume; a 1-D scatter_add_ is deterministic on CUDA and
    # needs no host-device sync, unlike bincount or boolean indexing.
    counts = torch.zeros(num_classes, dtype=torch.long, device=labels.device)
    counts.scatter_add_(0, labels.masked_fill(~valid, 0), valid.long())
    present = counts > 0
    num_present = present.sum().clamp_min(1)
    weights = counts.sum() / (num_present * counts.clamp_min(1)).to(torch.float32)
    return torch.where(present, weights, torch.zeros_like(weights))


def weighted_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    class_weight: Tensor | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    voxel_weight: Tensor | None = None,
) -> Tensor:
    """Weighted mean cross-entropy ``sum(w * ce) / sum(w)`` over voxels, in float32.

    A voxel's weight ``w`` is ``class_weight[label]`` (1 without class weights) times
    ``voxel_weight`` (1 without), and 0 where the label is ``ignore_index``. With no voxel
    weights this is ``F.cross_entropy(logits, labels, class_weight, ignore_index=...,
    label_smoothing=...)``, except that all weights 0 (e.g. an all-ignored patch) give 0,
    not NaN.

    Args:
        logits: (N, C, *spatial).
        labels: (N, *spatial) integer labels, see :func:`~volseg.losses.dice.as_label_map`.
        class_weight: (C,) weights >= 0, or ``None``.
        ignore_index: label whose voxels count nothing; their gradient is exactly zero.
        label_smoothing: in [0, 1); the smoothing terms are weighted as ``F.cross_entropy``
            weights them.
        voxel_weight: (N, *spatial) weights >= 0, or ``None``; a voxel of weight 0 gets an
            exactly-zero gradient.

    Raises:
        ValueError: if ``class_weight`` does not have C entries.
    """
    logits = logits.float()
    num_classes = logits.shape[1]
    if class_weight is not None:
        if len(class_weight) != num_classes:
            raise ValueError(
                f"class weights have {len(class_weight)} entries but logits have "
                f"C={num_classes} classes"
            )
        class_weight = class_weight.float()
    ignore = _TORCH_DEFAULT_IGNORE if ignore_index is None else ignore_index
    per_voxel = F.cross_entropy(
        logits,
        labels,
        weight=class_weight,
        ignore_index=ignore,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    # The mean's denominator as F.cross_entropy(reduction="mean") forms it: the summed weight
    # of the counted voxels.
    valid = labels != ignore
    if class_weight is None:
        weight = valid.to(per_voxel.dtype)
    else:
        weight = class_weight[labels.masked_fill(~valid, 0)] * valid
    if voxel_weight is not None:
        voxel_weight = voxel_weight.float()
        per_voxel = per_voxel * voxel_weight
        weight = weight * voxel_weight
    # Clamped so that all weights 0 give 0, not 0/0, without a host-device sync to test for it.
    return per_voxel.sum() / weight.sum().clamp_min(torch.finfo(per_voxel.dtype).tiny)


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
        # Not persistent: the weights come from the config, and a checkpoint trained without them
        # must still load into a module built with them (and vice versa).
        self.register_buffer("weight", class_weight_tensor(weight, "weight"), persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial)."""
        return weighted_cross_entropy(
            logits,
            as_label_map(logits, target),
            self.weight,
            self.ignore_index,
            self.label_smoothing,
        )


class SparseWeightedCrossEntropyLoss(nn.Module):
    """Weighted softmax cross-entropy for sparse annotation, ``sum(w * ce) / sum(w)``.

    Çiçek et al. 2016, "3D U-Net: learning dense volumetric segmentation from sparse
    annotation" (MICCAI), section 2: a weighted softmax loss in which unlabelled voxels weigh 0,
    so a network learns from a few annotated slices, and frequent background weighs less than
    rare classes. A voxel's weight is 0 where the label is ``ignore_index`` and
    ``class_weights[label]`` elsewhere, times the optional ``weight_map`` given to
    :meth:`forward`. ``class_weights="balanced"`` computes inverse-frequency weights from each
    batch's labelled voxels (:func:`balanced_class_weights`), so every class present has the
    same total influence. With fixed weights this is ``F.cross_entropy(weight=class_weights,
    ignore_index=ignore_index)``. All weights 0 (an all-unlabelled patch) gives 0, not NaN.
    Computed in float32 even under autocast. No label smoothing: use
    :class:`CrossEntropyLoss` for that.

    Args:
        class_weights: one weight >= 0 per class (length C); ``"balanced"`` for per-batch
            inverse-frequency weights; ``None`` for 1s. Fixed weights are stored as a buffer.
        ignore_index: label value of unannotated voxels (e.g. 255); ``None``: every voxel is
            annotated.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        class_weights: Sequence[float] | Literal["balanced"] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.balanced = isinstance(class_weights, str)
        if self.balanced and class_weights != "balanced":
            raise ValueError(
                f"class_weights must be a sequence of floats, 'balanced' or None, got "
                f"{class_weights!r}"
            )
        fixed = None if self.balanced else class_weight_tensor(class_weights, "class_weights")
        # Not persistent, as CrossEntropyLoss.weight: the weights come from the config.
        self.register_buffer("class_weights", fixed, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor | None = None) -> Tensor:
        """Return the scalar loss for ``logits`` (N, C, *spatial) and labels (N, [1,] *spatial).

        Args:
            logits: (N, C, *spatial) network output.
            target: (N, *spatial) or (N, 1, *spatial) integer labels.
            weight_map: optional per-voxel weights >= 0, (N, *spatial) or (N, 1, *spatial),
                multiplying the class weights (e.g. larger near borders, 0 to drop a region).
                Not checked for sign, which would cost a host-device sync every step.
        """
        labels = as_label_map(logits, target)
        class_weights = self.class_weights
        if self.balanced:
            class_weights = balanced_class_weights(labels, logits.shape[1], self.ignore_index)
        voxel_weight = None
        if weight_map is not None:
            voxel_weight = as_voxel_map(logits, weight_map, "weight_map")
        return weighted_cross_entropy(
            logits, labels, class_weights, self.ignore_index, voxel_weight=voxel_weight
        )
