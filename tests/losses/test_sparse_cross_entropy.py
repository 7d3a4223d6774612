"""SparseWeightedCrossEntropyLoss: balanced weights by hand, weight maps, unlabelled voxels.

Its fixed class weights are checked against F.cross_entropy in test_cross_entropy.py.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.losses.random_inputs import random_logits_labels
from volseg.losses import SparseWeightedCrossEntropyLoss
from volseg.losses.cross_entropy import balanced_class_weights

SHAPE = (2, 3, 4, 5, 6)


def _sparse_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits and labels with about 60% of the voxels set to 255, and that mask."""
    logits, labels = random_logits_labels(SHAPE, seed)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed + 100)) < 0.6
    return logits, labels.masked_fill(ignored, 255), ignored


def _eight_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    # (N=1, C=3, 8, 1, 1). Labels: four 0s, two 1s, two unlabelled (255); class 2 absent.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 255, 255]).reshape(1, 8, 1, 1)
    # Every voxel's logits are (0, ln 2, 0): p = (1/4, 1/2, 1/4).
    logits = torch.tensor([0.0, math.log(2.0), 0.0]).reshape(1, 3, 1, 1, 1).expand(1, 3, 8, 1, 1)
    return logits.contiguous(), labels


def test_balanced_weights_hand_worked() -> None:
    _, labels = _eight_voxels()
    # 6 labelled voxels, 2 classes present: w_0 = 6 / (2 * 4), w_1 = 6 / (2 * 2), w_2 = 0.
    weights = balanced_class_weights(labels, 3, ignore_index=255)
    assert weights.tolist() == pytest.approx([0.75, 1.5, 0.0])
    # Each present class carries 6 / 2 = 3 in total.
    assert 4 * weights[0].item() == pytest.approx(2 * weights[1].item())


def test_balanced_loss_hand_worked() -> None:
    logits, labels = _eight_voxels()
    # Class-0 voxels: ce = -ln(1/4); class-1 voxels: ce = -ln(1/2).
    numerator = 4 * 0.75 * -math.log(0.25) + 2 * 1.5 * -math.log(0.5)
    expected = numerator / (4 * 0.75 + 2 * 1.5)
    loss = SparseWeightedCrossEntropyLoss(class_weights="balanced", ignore_index=255)
    assert loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # Unbalanced, the four class-0 voxels would dominate: (4 ln 4 + 2 ln 2) / 6.
    unbalanced = SparseWeightedCrossEntropyLoss(ignore_index=255)(logits, labels)
    assert unbalanced.item() == pytest.approx((4 * math.log(4) + 2 * math.log(2)) / 6, abs=1e-6)


def test_balanced_weights_count_the_whole_batch() -> None:
    labels = torch.tensor([[0, 0, 0], [1, 2, 2]]).reshape(2, 3, 1, 1)
    # 6 voxels, 3 classes present with counts (3, 1, 2): w_c = 6 / (3 * n_c).
    assert balanced_class_weights(labels, 3, None).tolist() == pytest.approx([2 / 3, 2.0, 1.0])


def test_weight_map_multiplies_in() -> None:
    logits, labels, _ = _sparse_inputs(2)
    weight_map = torch.rand(labels.shape, generator=torch.Generator().manual_seed(3)) * 3
    class_weights = torch.tensor([0.5, 1.0, 2.0])
    # Hand-formed weights: class weight times map, 0 where unlabelled.
    valid = labels != 255
    safe = labels.masked_fill(~valid, 0)
    weight = class_weights[safe] * weight_map * valid
    ce = F.cross_entropy(logits, safe, reduction="none")
    expected = (weight * ce).sum() / weight.sum()
    loss = SparseWeightedCrossEntropyLoss(class_weights=[0.5, 1.0, 2.0], ignore_index=255)
    assert loss(logits, labels, weight_map).item() == pytest.approx(expected.item(), abs=1e-6)
    with_channel = loss(logits, labels, weight_map.unsqueeze(1))
    assert with_channel.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 3.0], "balanced"])
def test_zero_gradient_on_unlabelled_and_zero_weight_voxels(class_weights) -> None:
    logits, labels, ignored = _sparse_inputs(4)
    zero_weight = torch.rand(labels.shape, generator=torch.Generator().manual_seed(5)) < 0.2
    weight_map = (~zero_weight).float()
    logits.requires_grad_(True)
    loss = SparseWeightedCrossEntropyLoss(class_weights=class_weights, ignore_index=255)
    loss(logits, labels, weight_map).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.all(grad[ignored | zero_weight] == 0)
    assert grad[~(ignored | zero_weight)].abs().sum() > 0


@pytest.mark.parametrize("class_weights", [None, [1.0, 2.0, 3.0], "balanced"])
def test_all_unlabelled_patch_gives_zero_and_finite_gradient(class_weights) -> None:
    logits = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2, 2), 255)
    loss = SparseWeightedCrossEntropyLoss(class_weights=class_weights, ignore_index=255)
    value = loss(logits, labels)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(logits.grad == 0)
    # A weight map of zeros over labelled voxels is the same case.
    value = loss(logits, torch.zeros_like(labels), torch.zeros(1, 2, 2, 2))
    assert value.item() == 0.0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="class_weights"):
        SparseWeightedCrossEntropyLoss(class_weights="inverse")
    with pytest.raises(ValueError, match="class_weights"):
        SparseWeightedCrossEntropyLoss(class_weights=[1.0, -1.0])
    logits, labels, _ = _sparse_inputs()
    with pytest.raises(ValueError, match="class weights have 2 entries"):
        SparseWeightedCrossEntropyLoss(class_weights=[1.0, 2.0], ignore_index=255)(logits, labels)
    with pytest.raises(ValueError, match="weight_map"):
        SparseWeightedCrossEntropyLoss(ignore_index=255)(logits, labels, torch.ones(2, 4, 5))
    assert "class_weights" in dict(SparseWeightedCrossEntropyLoss([1.0, 2.0]).named_buffers())
