"""Which inputs the metrics read as label maps or one-hot, and which they refuse."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from volseg.metrics import dice, hausdorff_distance, surface_metrics
from volseg.metrics.masks import class_masks


def _numpy_dice(pred: np.ndarray, target: np.ndarray, label: int) -> float:
    """``2|P∩T| / (|P|+|T|)`` of one 3-D case, by hand."""
    p, t = pred == label, target == label
    return 2 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def _labels(seed: int, shape: tuple[int, ...], num_classes: int) -> torch.Tensor:
    return torch.randint(0, num_classes, shape, generator=torch.Generator().manual_seed(seed))


def test_integer_label_map_whose_dim_1_equals_num_classes_is_read_as_labels() -> None:
    # Two cases of 3-class labels on a 3 x 4 x 5 grid: shape[1] == num_classes by chance.
    pred, target = _labels(0, (2, 3, 4, 5), 3), _labels(1, (2, 3, 4, 5), 3)
    got = dice(pred, target, 3)
    assert got.shape == (2, 2)
    for case in range(2):
        for label in (1, 2):
            expected = _numpy_dice(pred[case].numpy(), target[case].numpy(), label)
            assert got[case, label - 1].item() == pytest.approx(expected, abs=1e-6)
    # The same through the surface metrics, and with a uint8 dtype.
    assert surface_metrics(pred, target, None, 1.0, num_classes=3)["hd95"].shape == (2, 2)
    torch.testing.assert_close(dice(pred.to(torch.uint8), target.to(torch.uint8), 3), got)


def test_integer_one_hot_looking_label_map_is_still_a_label_map() -> None:
    # Values 0/1 that sum to 1 over dim 1, with shape[1] == num_classes: indistinguishable from
    # an integer 2-D one-hot (N, C, H, W), and read, as documented, as a 3-D label map.
    labels = _labels(2, (2, 6, 7), 2)
    looks_one_hot = F.one_hot(labels, 2).movedim(-1, 1)  # (2, 2, 6, 7), int64
    other = torch.roll(looks_one_hot, 1, dims=3)
    got = dice(looks_one_hot, other, 2)
    for case in range(2):
        expected = _numpy_dice(looks_one_hot[case].numpy(), other[case].numpy(), 1)
        assert got[case, 0].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.float16])
def test_two_d_one_hot_is_refused(dtype: torch.dtype) -> None:
    labels = _labels(3, (2, 6, 7), 3)
    one_hot_2d = F.one_hot(labels, 3).movedim(-1, 1).to(dtype)  # (N, C, H, W), C == 3
    with pytest.raises(ValueError, match=r"2-D inputs .*not supported.*\(N, C, X, Y, Z\)"):
        dice(one_hot_2d, one_hot_2d, 3)
    with pytest.raises(ValueError, match="2-D inputs"):
        hausdorff_distance(one_hot_2d, one_hot_2d, num_classes=3)
    # Unbatched (C, H, W) too: a boolean or float 3-D tensor is not a label map.
    with pytest.raises(ValueError, match="integer dtype"):
        dice(one_hot_2d[0], one_hot_2d[0], 3)


@pytest.mark.parametrize("shape", [(8,), (6, 7), (1, 2, 3, 4, 5, 6)])
def test_other_ranks_are_refused(shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"got shape {re.escape(str(shape))}.*not supported"):
        class_masks(x, 2, "pred")


def test_accepted_forms_give_the_same_masks() -> None:
    labels = _labels(4, (2, 5, 4, 3), 3)
    masks = class_masks(labels, 3, "pred")
    assert masks.dtype == torch.bool and masks.shape == (2, 3, 5, 4, 3)
    one_hot = F.one_hot(labels, 3).movedim(-1, 1)
    assert torch.equal(class_masks(one_hot.bool(), 3, "pred"), masks)
    assert torch.equal(class_masks(one_hot.float() * 0.9, 3, "pred"), masks)  # thresholded
    assert torch.equal(class_masks(labels[0].numpy(), 3, "pred"), masks[:1])  # (X, Y, Z)
    # A binary mask is a label map once cast to integers.
    binary = labels == 1
    assert torch.equal(class_masks(binary.long(), 2, "pred")[:, 1], binary)
    with pytest.raises(ValueError, match="integer dtype"):
        class_masks(binary, 2, "pred")
