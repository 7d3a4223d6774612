"""DiceCELoss against MONAI, WeightedSum through Hydra, DeepSupervisionLoss by hand."""

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from monai.losses import DiceCELoss as MonaiDiceCELoss
from monai.losses import DiceLoss as MonaiDiceLoss
from omegaconf import OmegaConf

from tests.losses.random_inputs import random_logits_labels
from volseg.losses import CrossEntropyLoss, DeepSupervisionLoss, DiceCELoss, DiceLoss, WeightedSum

SHAPE = (2, 3, 6, 5, 4)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_logits_labels(SHAPE, seed)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dice_weight": 0.3, "ce_weight": 2.0},
        {"include_background": True, "batch_dice": True, "label_smoothing": 0.1},
        {"smooth_nr": 0.0, "smooth_dr": 1e-2, "squared_pred": True},
    ],
)
def test_matches_monai(options: dict) -> None:
    logits, labels = _inputs()
    ours = DiceCELoss(**options)(logits, labels)
    reference = MonaiDiceCELoss(
        to_onehot_y=True,
        softmax=True,
        lambda_dice=options.get("dice_weight", 1.0),
        lambda_ce=options.get("ce_weight", 1.0),
        include_background=options.get("include_background", False),
        batch=options.get("batch_dice", False),
        smooth_nr=options.get("smooth_nr", 1e-5),
        smooth_dr=options.get("smooth_dr", 1e-5),
        squared_pred=options.get("squared_pred", False),
        label_smoothing=options.get("label_smoothing", 0.0),
    )(logits, labels.unsqueeze(1))
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)


def test_class_weights_weight_only_the_cross_entropy() -> None:
    # Documented difference from MONAI, whose DiceCELoss also scales the Dice terms.
    logits, labels = _inputs(1)
    weight = [0.2, 1.0, 3.0]
    ours = DiceCELoss(weight=weight)(logits, labels)
    dice = MonaiDiceLoss(softmax=True, to_onehot_y=True, include_background=False)(
        logits, labels.unsqueeze(1)
    )
    ce = F.cross_entropy(logits, labels, weight=torch.tensor(weight))
    assert ours.item() == pytest.approx((dice + ce).item(), abs=1e-5)


def test_ignored_voxels_get_zero_gradient_through_every_wrapper() -> None:
    logits, labels = _inputs(3)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(4)) < 0.4
    labels = labels.masked_fill(ignored, 255)
    logits.requires_grad_(True)
    loss = DeepSupervisionLoss(
        WeightedSum(
            [DiceCELoss(ignore_index=255), DiceLoss(ignore_index=255, batch_dice=True)],
            [1.0, 0.5],
        )
    )
    loss(logits, labels).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.all(grad[ignored] == 0)
    assert grad[~ignored].abs().sum() > 0


def test_weighted_sum_is_the_weighted_sum() -> None:
    logits, labels = _inputs(6)
    dice, ce = DiceLoss(), CrossEntropyLoss()
    expected = 0.25 * dice(logits, labels) + 2.0 * ce(logits, labels)
    by_list = WeightedSum([dice, ce], [0.25, 2.0])(logits, labels)
    by_name = WeightedSum({"dice": dice, "ce": ce}, [0.25, 2.0])(logits, labels)
    assert by_list.item() == pytest.approx(expected.item(), abs=1e-6)
    assert by_name.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="weights"):
        WeightedSum([dice, ce], [1.0])


def test_weighted_sum_from_hydra_config() -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "volseg.losses.WeightedSum",
            "losses": {
                "dice": {"_target_": "volseg.losses.DiceLoss"},
                "ce": {"_target_": "volseg.losses.CrossEntropyLoss", "weight": [1.0, 2.0, 3.0]},
            },
            "weights": [1.0, 0.5],
        }
    )
    loss = instantiate(cfg)
    logits, labels = _inputs(7)
    expected = DiceLoss()(logits, labels) + 0.5 * CrossEntropyLoss(weight=[1.0, 2.0, 3.0])(
        logits, labels
    )
    assert loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    assert len(list(loss.buffers())) == 1  # the CE weight registered as a submodule buffer


def test_deep_supervision_downsamples_the_target_and_halves_the_weights() -> None:
    gen = torch.Generator().manual_seed(8)
    labels = torch.randint(0, 3, (2, 8, 6, 4), generator=gen)
    labels[:, :2] = 255  # an ignored slab must stay ignored at every level
    outputs = [
        torch.randn(2, 3, 8, 6, 4, generator=gen),
        torch.randn(2, 3, 4, 3, 2, generator=gen),
        torch.randn(2, 3, 2, 2, 1, generator=gen),
    ]
    base = DiceCELoss(ignore_index=255)
    # Hand-worked nearest-exact targets: output voxel i takes input floor((i + 0.5) * in / out),
    # so an exact 2x takes voxels 1::2...
    level1 = labels[:, 1::2, 1::2, 1::2]
    # ...and 8 -> 2, 6 -> 2, 4 -> 1 take indices [2, 6], [1, 4], [2].
    level2 = labels[:, [2, 6]][:, :, [1, 4]][:, :, :, [2]]
    weights = [1.0, 0.5, 0.25]
    expected = sum(
        w / sum(weights) * base(out, t)
        for w, out, t in zip(weights, outputs, [labels, level1, level2], strict=True)
    )
    loss = DeepSupervisionLoss(base)
    assert loss.level_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert loss(outputs, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    # A channel axis on the target changes nothing.
    assert loss(outputs, labels.unsqueeze(1)).item() == pytest.approx(expected.item(), abs=1e-6)


def test_deep_supervision_passes_a_tensor_through_and_checks_weights() -> None:
    logits, labels = _inputs(9)
    base = DiceCELoss()
    assert torch.equal(DeepSupervisionLoss(base)(logits, labels), base(logits, labels))
    custom = DeepSupervisionLoss(base, weights=[1.0, 0.0])
    half = F.interpolate(logits, scale_factor=0.5)
    assert custom([logits, half], labels).item() == pytest.approx(
        base(logits, labels).item(), abs=1e-6
    )
    with pytest.raises(ValueError, match="weights"):
        custom([logits], labels)
    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(base, weights=[1.0, -1.0])
