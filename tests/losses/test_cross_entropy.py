"""CrossEntropyLoss (and the sparse loss's fixed weights) against torch and hand-worked values."""

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from volseg.losses import CrossEntropyLoss, SparseWeightedCrossEntropyLoss


def _two_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    # (N=1, C=2, 2, 1, 1): voxel 0 logits (0, ln 3) -> p = (1/4, 3/4), label 1;
    # voxel 1 logits (0, 0) -> p = (1/2, 1/2), label 0.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]).reshape(1, 2, 2, 1, 1)
    labels = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    return logits, labels


def test_hand_worked_two_voxels() -> None:
    logits, labels = _two_voxels()
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert CrossEntropyLoss()(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    # Weights (1, 3): weighted mean (3 * -ln 3/4 + 1 * -ln 1/2) / (3 + 1).
    weighted = (-3 * math.log(0.75) - math.log(0.5)) / 4
    assert CrossEntropyLoss(weight=[1.0, 3.0])(logits, labels).item() == pytest.approx(
        weighted, abs=1e-6
    )
    # Ignoring label 0 leaves voxel 0 alone.
    assert CrossEntropyLoss(ignore_index=0)(logits, labels).item() == pytest.approx(
        -math.log(0.75), abs=1e-6
    )


def _sparse(
    weight: list[float] | None = None, ignore_index: int | None = None
) -> SparseWeightedCrossEntropyLoss:
    return SparseWeightedCrossEntropyLoss(class_weights=weight, ignore_index=ignore_index)


@pytest.mark.parametrize(
    ("make_loss", "options"),
    [
        (CrossEntropyLoss, {}),
        (CrossEntropyLoss, {"weight": [0.5, 2.0, 1.0]}),
        (
            CrossEntropyLoss,
            {"ignore_index": 255, "weight": [0.5, 2.0, 1.0], "label_smoothing": 0.1},
        ),
        (CrossEntropyLoss, {"ignore_index": 1, "label_smoothing": 0.2}),
        # The sparse loss with fixed class weights is the same F.cross_entropy.
        (_sparse, {}),
        (_sparse, {"ignore_index": 255, "weight": [0.2, 1.0, 5.0]}),
        (_sparse, {"ignore_index": 1, "weight": [1.0, 0.0, 2.0]}),
    ],
)
def test_matches_torch_functional(make_loss: Callable[..., nn.Module], options: dict) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 5, 6), generator=gen)
    labels[:, 0] = 255 if options.get("ignore_index") == 255 else labels[:, 0]
    weight = options.get("weight")
    reference = F.cross_entropy(
        logits,
        labels,
        weight=None if weight is None else torch.tensor(weight),
        ignore_index=options.get("ignore_index", -100),
        label_smoothing=options.get("label_smoothing", 0.0),
    )
    ours = make_loss(**options)(logits, labels.unsqueeze(1))
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)


def test_ignored_voxels_get_zero_gradient() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5, 6), generator=gen)
    ignored = torch.rand(labels.shape, generator=gen) < 0.5
    labels = labels.masked_fill(ignored, 255)
    loss = CrossEntropyLoss(ignore_index=255, weight=[1.0, 2.0, 3.0], label_smoothing=0.1)
    loss(logits, labels).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.all(grad[ignored] == 0)
    assert grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_all_ignored_patch_gives_zero_not_nan(label_smoothing: float) -> None:
    logits = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
    labels = torch.full((1, 2, 2, 2), 255)
    loss = CrossEntropyLoss(ignore_index=255, label_smoothing=label_smoothing)(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_weight_is_a_buffer_and_checked_against_classes() -> None:
    loss = CrossEntropyLoss(weight=[1.0, 2.0])
    assert "weight" in dict(loss.named_buffers())
    assert loss.to(torch.float64).weight.dtype == torch.float64
    logits = torch.randn(1, 3, 2, 2, 2)
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="weight"):
        loss(logits, labels)
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.0)
