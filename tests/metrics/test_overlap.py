"""Overlap metrics against a hand-worked toy and SimpleITK's LabelOverlapMeasuresImageFilter."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from volseg.metrics import DiceMetric, IoUMetric, dice, iou, volume_similarity


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """One case, classes 0..3, on a 1 x 2 x 4 grid.

    class 1: pred 3 voxels, target 2, overlap 2 -> Dice 4/5, IoU 2/3, VS 1 - 1/5
    class 2: pred 1 voxel, target 0           -> Dice 0, IoU 0, VS 0
    class 3: in neither                        -> NaN for all three
    """
    pred = torch.tensor([[[1, 1, 1, 2], [0, 0, 0, 0]]])
    target = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]]])
    return pred, target


def test_hand_worked_toy() -> None:
    pred, target = _toy()
    d = dice(pred, target, num_classes=4)
    assert d.shape == (1, 3)
    assert d[0, :2].tolist() == pytest.approx([4 / 5, 0.0])
    assert math.isnan(d[0, 2])
    j = iou(pred, target, num_classes=4)
    assert j[0, :2].tolist() == pytest.approx([2 / 3, 0.0])
    assert math.isnan(j[0, 2])
    vs = volume_similarity(pred, target, num_classes=4)
    assert vs[0, :2].tolist() == pytest.approx([4 / 5, 0.0])
    assert math.isnan(vs[0, 2])
    # Background: pred 4 voxels, target 6, overlap 4 -> Dice 8/10.
    with_bg = dice(pred, target, num_classes=4, include_background=True)
    assert with_bg.shape == (1, 4)
    assert with_bg[0, 0].item() == pytest.approx(0.8)


def test_one_hot_input_equals_label_input() -> None:
    pred, target = _toy()
    pred_oh = F.one_hot(pred, 4).movedim(-1, 0).unsqueeze(0).float()
    target_oh = F.one_hot(target, 4).movedim(-1, 0).unsqueeze(0).bool()
    expected = dice(pred, target, 4, include_background=True)
    got = dice(pred_oh, target_oh, 4, include_background=True)
    assert torch.allclose(got, expected, equal_nan=True)
    # Mixed forms, batched labels.
    assert torch.allclose(dice(pred.unsqueeze(0), target_oh, 4), expected[:, 1:], equal_nan=True)


def test_matches_simpleitk_label_overlap() -> None:
    rng = np.random.default_rng(0)
    shape = (9, 6, 4)  # anisotropic grid, different size on every axis
    num_classes = 4
    target = rng.integers(0, num_classes, size=(3, *shape))
    # Predictions that agree with the target on ~60% of voxels, so values are not trivial.
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 4, target.shape))
    ours = {
        "dice": dice(torch.from_numpy(pred), torch.from_numpy(target), num_classes),
        "iou": iou(torch.from_numpy(pred), torch.from_numpy(target), num_classes),
        "vs": volume_similarity(torch.from_numpy(pred), torch.from_numpy(target), num_classes),
    }
    for case in range(len(target)):
        source_image = sitk.GetImageFromArray(pred[case].astype(np.uint8))
        target_image = sitk.GetImageFromArray(target[case].astype(np.uint8))
        source_image.SetSpacing((0.7, 0.7, 3.0))
        target_image.SetSpacing((0.7, 0.7, 3.0))
        measures = sitk.LabelOverlapMeasuresImageFilter()
        measures.Execute(target_image, source_image)
        for label in range(1, num_classes):
            k = label - 1
            # float32 ratios of counts below 2**24: agreement to 1e-6.
            assert ours["dice"][case, k].item() == pytest.approx(
                measures.GetDiceCoefficient(label), abs=1e-6
            )
            assert ours["iou"][case, k].item() == pytest.approx(
                measures.GetJaccardCoefficient(label), abs=1e-6
            )
            # SimpleITK's volume similarity is signed 2(|T|-|S|)/(|T|+|S|).
            assert ours["vs"][case, k].item() == pytest.approx(
                1 - abs(measures.GetVolumeSimilarity(label)) / 2, abs=1e-6
            )


def test_rejects_bad_inputs() -> None:
    pred, target = _toy()
    with pytest.raises(ValueError, match="num_classes"):
        dice(pred, target, num_classes=2)  # label 2 out of range
    with pytest.raises(ValueError, match="num_classes"):
        dice(pred, target, num_classes=1)
    with pytest.raises(ValueError, match="integer"):
        dice(pred.float(), target, num_classes=4)
    with pytest.raises(ValueError, match="shapes"):
        dice(pred, target[:, :, :2], num_classes=4)


def _random_batch(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (n, 5, 4, 3), generator=gen)
    pred = torch.randint(0, 3, (n, 5, 4, 3), generator=gen)
    # Remove class 2 from both maps in the first case, so that case leaves it undefined.
    target[0][target[0] == 2] = 0
    pred[0][pred[0] == 2] = 1
    return pred, target


def test_metric_accumulates_like_one_concatenated_batch() -> None:
    pred_a, target_a = _random_batch(0, 3)
    pred_b, target_b = _random_batch(1, 2)
    split = DiceMetric(num_classes=4)
    split.update(pred_a, target_a)
    split.update(pred_b, target_b)
    whole = DiceMetric(num_classes=4)
    whole.update(torch.cat([pred_a, pred_b]), torch.cat([target_a, target_b]))
    assert torch.allclose(split.compute(), whole.compute(), equal_nan=True)
    # Against the functional values, NaNs skipped; class 3 never occurs -> NaN.
    per_case = dice(torch.cat([pred_a, pred_b]), torch.cat([target_a, target_b]), 4)
    expected = torch.nanmean(per_case, dim=0)
    result = split.compute()
    assert result.shape == (3,)
    assert torch.allclose(result, expected, equal_nan=True)
    assert torch.isnan(result[2])
    assert split.count.tolist() == [5, 3, 0]


def test_iou_metric_and_reset() -> None:
    pred, target = _random_batch(2, 4)
    metric = IoUMetric(num_classes=3, include_background=True)
    metric.update(pred, target)
    expected = torch.nanmean(iou(pred, target, 3, include_background=True), dim=0)
    assert torch.allclose(metric.compute(), expected)
    metric.reset()
    with pytest.warns(UserWarning):  # torchmetrics warns of compute() before update()
        assert torch.isnan(metric.compute()).all()
    with pytest.raises(ValueError, match="num_classes"):
        DiceMetric(num_classes=1)
