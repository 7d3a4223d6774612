"""TverskyLoss against MONAI and DiceLoss; FocalTverskyLoss against hand-worked values."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import TverskyLoss as MonaiTverskyLoss

from tests.losses.random_inputs import random_logits_labels
from volseg.losses import DiceLoss, FocalTverskyLoss, TverskyLoss

# Non-cubic on purpose, so a transposed axis would change the result.
SHAPE = (2, 4, 5, 6, 7)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_logits_labels(SHAPE, seed)


def _with_ignored(labels: torch.Tensor, ignore_index: int, seed: int) -> torch.Tensor:
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    return labels.masked_fill(ignored, ignore_index)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"alpha": 0.5, "beta": 0.5},
        {"include_background": True, "alpha": 0.7, "beta": 0.3},
        {"batch_dice": True, "alpha": 0.1, "beta": 0.9},
        {"include_background": True, "batch_dice": True, "alpha": 1.0, "beta": 1.0},
        {"smooth_nr": 0.0, "smooth_dr": 1e-3, "alpha": 0.0, "beta": 2.0},
        {"smooth_nr": 1.0, "smooth_dr": 1.0},
        {"ignore_index": 255},
        {"ignore_index": 2, "batch_dice": True, "include_background": True},
    ],
)
def test_matches_monai(options: dict) -> None:
    logits, labels = _inputs()
    if "ignore_index" in options:
        labels = _with_ignored(labels, options["ignore_index"], seed=1)
    ours = TverskyLoss(**options)(logits, labels)
    monai_options = {"include_background": False, "alpha": 0.3, "beta": 0.7, **options}
    monai_options["batch"] = monai_options.pop("batch_dice", False)
    reference = MonaiTverskyLoss(softmax=True, to_onehot_y=True, **monai_options)(
        logits, labels.unsqueeze(1)
    )
    # float32 sums over ~400 voxels: agreement to 1e-5 absolute.
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)


@pytest.mark.parametrize("options", [{}, {"include_background": True, "batch_dice": True}])
def test_half_and_half_is_dice(options: dict) -> None:
    # TI(0.5, 0.5) = (TP + s) / (TP + (FP + FN) / 2 + s) = (2 TP + 2 s) / (|P| + |G| + 2 s):
    # Dice with twice the smoothing.
    logits, labels = _inputs(2)
    smooth = 1e-3
    tversky = TverskyLoss(alpha=0.5, beta=0.5, smooth_nr=smooth, smooth_dr=smooth, **options)
    dice = DiceLoss(smooth_nr=2 * smooth, smooth_dr=2 * smooth, **options)
    assert tversky(logits, labels).item() == pytest.approx(dice(logits, labels).item(), abs=1e-6)


def _two_voxels() -> tuple[torch.Tensor, torch.Tensor]:
    # (N=1, C=2, 2, 1, 1): class-1 probabilities 0.8 (label 1) and 0.3 (label 0).
    p1 = torch.tensor([0.8, 0.3])
    logits = torch.stack([torch.zeros(2), torch.log(p1 / (1 - p1))]).reshape(1, 2, 2, 1, 1)
    labels = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    return logits, labels


@pytest.mark.parametrize("include_background", [False, True])
def test_focal_hand_worked_two_voxels(include_background: bool) -> None:
    logits, labels = _two_voxels()
    alpha, beta, gamma, smooth = 0.3, 0.7, 4 / 3, 1e-5
    # Class 1: p = (0.8, 0.3), g = (1, 0): TP = 0.8, FP = 0.3, FN = 1 - 0.8 = 0.2.
    # Class 0: p = (0.2, 0.7), g = (0, 1): TP = 0.7, FP = 0.2, FN = 1 - 0.7 = 0.3.
    counts = [(0.8, 0.3, 0.2)] + ([(0.7, 0.2, 0.3)] if include_background else [])
    terms = [
        (1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** (1 / gamma)
        for tp, fp, fn in counts
    ]
    expected = sum(terms) / len(terms)
    loss = FocalTverskyLoss(include_background=include_background)(logits, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # The same sums for the plain Tversky loss, exponent 1.
    plain = sum(1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth) for tp, fp, fn in counts)
    tversky = TverskyLoss(include_background=include_background)(logits, labels)
    assert tversky.item() == pytest.approx(plain / len(counts), abs=1e-6)


@pytest.mark.parametrize(
    "options", [{}, {"include_background": True, "batch_dice": True, "alpha": 0.5, "beta": 0.5}]
)
def test_focal_gamma_one_is_tversky(options: dict) -> None:
    logits, labels = _inputs(3)
    focal = FocalTverskyLoss(gamma=1.0, **options)(logits, labels)
    assert focal.item() == pytest.approx(TverskyLoss(**options)(logits, labels).item(), abs=1e-6)


@pytest.mark.parametrize("gamma", [4 / 3, 3.0])
def test_focal_perfect_prediction_has_finite_gradient(gamma: float) -> None:
    _, labels = _inputs(4)
    logits = (F.one_hot(labels, SHAPE[1]).movedim(-1, 1).float() * 50.0).requires_grad_(True)
    loss = FocalTverskyLoss(gamma=gamma, include_background=True)(logits, labels)
    loss.backward()
    # Every 1 - TI is 0 in float32 here, clamped to the smallest normal float.
    assert loss.item() < 1e-9
    assert torch.isfinite(logits.grad).all()


def test_focal_above_one_smoothing_gives_no_nan() -> None:
    # smooth_nr > smooth_dr lets TI exceed 1 for an absent class; the clamp keeps the power real.
    logits, labels = _inputs(5)
    labels = labels.clamp_max(2)  # class 3 absent
    logits.requires_grad_(True)
    loss = FocalTverskyLoss(smooth_nr=1.0, smooth_dr=0.0, batch_dice=True)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_focal_is_dearer_than_tversky_on_good_predictions() -> None:
    # With gamma > 1, (1 - TI) ** (1 / gamma) > 1 - TI for 0 < 1 - TI < 1.
    logits, labels = _two_voxels()
    assert FocalTverskyLoss()(logits, labels) > TverskyLoss()(logits, labels)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        TverskyLoss(alpha=-0.1)
    with pytest.raises(ValueError, match="beta"):
        FocalTverskyLoss(beta=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        FocalTverskyLoss(gamma=0.0)
    with pytest.raises(ValueError, match="smooth_nr"):
        TverskyLoss(smooth_nr=-1.0)
    logits, labels = _inputs()
    with pytest.raises(ValueError, match="TverskyLoss needs logits with C >= 2"):
        TverskyLoss()(logits[:, :1], labels)
