"""DiceLoss against MONAI's DiceLoss and hand-worked values, and its ignore behaviour."""

import pytest
import torch
from monai.losses import DiceLoss as MonaiDiceLoss

from tests.losses.random_inputs import random_logits_labels
from volseg.losses import DiceLoss

# Non-cubic on purpose, so a transposed axis would change the result.
SHAPE = (2, 4, 5, 6, 7)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_logits_labels(SHAPE, seed)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"include_background": True},
        {"batch_dice": True},
        {"include_background": True, "batch_dice": True, "squared_pred": True},
        {"smooth_nr": 0.0, "smooth_dr": 1e-3},
        {"smooth_nr": 1.0, "smooth_dr": 1.0, "squared_pred": True},
    ],
)
def test_matches_monai(options: dict) -> None:
    logits, labels = _inputs()
    ours = DiceLoss(**options)(logits, labels)
    monai_options = {"include_background": False, **options}
    monai_options["batch"] = monai_options.pop("batch_dice", False)
    reference = MonaiDiceLoss(softmax=True, to_onehot_y=True, **monai_options)(
        logits, labels.unsqueeze(1)
    )
    # float32 sums over ~400 voxels: agreement to 1e-5 absolute.
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)


def test_channel_target_equals_plain_target() -> None:
    logits, labels = _inputs(1)
    loss = DiceLoss()
    assert torch.equal(loss(logits, labels), loss(logits, labels.unsqueeze(1)))


def test_hand_worked_two_voxels() -> None:
    # Two voxels, two classes; probabilities of class 1 are 0.8 (true) and 0.3 (false).
    p1 = torch.tensor([0.8, 0.3])
    logits = torch.stack([torch.zeros(2), torch.log(p1 / (1 - p1))]).reshape(1, 2, 2, 1, 1)
    labels = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    expected = 1 - (2 * 0.8) / (0.8 + 0.3 + 1.0)
    assert DiceLoss(smooth_nr=0, smooth_dr=0)(logits, labels).item() == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize("ignore_index", [255, 0, -1])
def test_ignored_voxels_get_zero_gradient(ignore_index: int) -> None:
    logits, labels = _inputs(3)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    labels = labels.masked_fill(ignored, ignore_index)
    logits.requires_grad_(True)
    loss = DiceLoss(ignore_index=ignore_index, include_background=True)(logits, labels)
    loss.backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.all(grad[ignored] == 0)
    assert grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("ignore_index", [255, 2])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_ignore_index_matches_monai(ignore_index: int, batch_dice: bool) -> None:
    logits, labels = _inputs(7)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(8)) < 0.3
    labels = labels.masked_fill(ignored, ignore_index)
    ours = DiceLoss(ignore_index=ignore_index, batch_dice=batch_dice)(logits, labels)
    reference = MonaiDiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=False,
        batch=batch_dice,
        ignore_index=ignore_index,
    )(logits, labels.unsqueeze(1))
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)


def test_ignore_index_equals_dropping_the_voxels() -> None:
    # Ignoring a voxel must give the same loss as a volume without it: check with batch_dice on
    # a 1-D "volume" where dropping voxels is a slice.
    logits, labels = _inputs(5)
    logits, labels = logits[:, :, :, :1, :1], labels[:, :, :1, :1]
    masked = labels.clone()
    masked[:, 3:] = 255
    loss = DiceLoss(ignore_index=255, batch_dice=True)
    assert loss(logits, masked).item() == pytest.approx(
        DiceLoss(batch_dice=True)(logits[:, :, :3], labels[:, :3]).item(), abs=1e-6
    )


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="smooth_dr"):
        DiceLoss(smooth_dr=-1)
    logits, labels = _inputs()
    with pytest.raises(ValueError, match="target"):
        DiceLoss()(logits, labels[:, :-1])
    with pytest.raises(ValueError, match="C >= 2"):
        DiceLoss()(logits[:, :1], labels)
