"""Empty-mask conventions case by case against MONAI's metrics, and the ``both_empty`` option.

The tables state, for each metric and case, volseg's value and MONAI's, as documented in
``volseg/metrics/overlap.py``, ``volseg/metrics/surface.py`` and ``docs/evaluation.md``: the
test fails if either library stops doing what the documentation says.
"""

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
    SurfaceDistanceMetric,
)

from volseg.metrics import (
    average_surface_distance,
    dice,
    hausdorff_distance,
    iou,
    surface_dice,
    surface_metrics,
    volume_similarity,
)
from volseg.metrics.surface import BOTH_EMPTY_PERFECT

NAN, INF = math.nan, math.inf
SPACING = (0.7, 1.1, 2.5)
TOLERANCE_MM = 1.0
# Marks a case where both masks hold the class: the two libraries must agree on a finite value.
EQUAL = "equal"


def _case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary label maps ``(1, 7, 6, 5)``: prediction and target for one edge case."""
    empty = torch.zeros(1, 7, 6, 5, dtype=torch.long)
    cube = empty.clone()
    cube[0, 1:4, 1:3, 1:4] = 1
    moved = torch.roll(cube, 2, dims=1)
    return {
        "neither": (empty, empty),
        "prediction only": (cube, empty),  # an empty reference, a false positive
        "target only": (empty, cube),  # a missed structure
        "both": (moved, cube),
    }[name]


def _monai(metric, pred: torch.Tensor, target: torch.Tensor) -> float:
    """MONAI's value for class 1 of one case, from one-hot float input as MONAI expects."""
    p = F.one_hot(pred, 2).movedim(-1, 1).float()
    t = F.one_hot(target, 2).movedim(-1, 1).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns of every empty mask
        # Overlap metrics count voxels and take no spacing.
        spacing = {} if isinstance(metric, DiceMetric | MeanIoU) else {"spacing": list(SPACING)}
        metric(y_pred=p, y=t, **spacing)
        return metric.aggregate().item()


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5)


# name -> (volseg, MONAI metric factory, {case: (volseg value, MONAI value)}).
TABLE: dict[str, tuple[Callable, Callable, dict]] = {
    "dice": (
        lambda p, t: dice(p, t, 2),
        lambda: DiceMetric(include_background=False, reduction="none"),
        {
            "neither": (NAN, NAN),
            "prediction only": (0.0, NAN),  # MONAI ignore_empty=True: empty reference -> NaN
            "target only": (0.0, 0.0),
            "both": EQUAL,
        },
    ),
    "dice both_empty=1 vs ignore_empty=False": (
        lambda p, t: dice(p, t, 2, both_empty=1.0),
        lambda: DiceMetric(include_background=False, reduction="none", ignore_empty=False),
        {"neither": (1.0, 1.0), "prediction only": (0.0, 0.0), "target only": (0.0, 0.0),
         "both": EQUAL},
    ),
    "iou": (
        lambda p, t: iou(p, t, 2),
        lambda: MeanIoU(include_background=False, reduction="none"),
        {"neither": (NAN, NAN), "prediction only": (0.0, NAN), "target only": (0.0, 0.0),
         "both": EQUAL},
    ),
    "iou both_empty=1 vs ignore_empty=False": (
        lambda p, t: iou(p, t, 2, both_empty=1.0),
        lambda: MeanIoU(include_background=False, reduction="none", ignore_empty=False),
        {"neither": (1.0, 1.0), "prediction only": (0.0, 0.0), "target only": (0.0, 0.0),
         "both": EQUAL},
    ),
    "hausdorff": (
        lambda p, t: hausdorff_distance(p, t, SPACING, num_classes=2),
        lambda: HausdorffDistanceMetric(reduction="none"),
        {"neither": (NAN, NAN), "prediction only": (INF, INF), "target only": (INF, INF),
         "both": EQUAL},
    ),
    "hd95": (
        lambda p, t: hausdorff_distance(p, t, SPACING, 95, num_classes=2),
        lambda: HausdorffDistanceMetric(percentile=95, reduction="none"),
        # MONAI: torch.quantile of infinite distances is NaN.
        {"neither": (NAN, NAN), "prediction only": (INF, NAN), "target only": (INF, NAN),
         "both": EQUAL},
    ),
    "assd": (
        lambda p, t: average_surface_distance(p, t, SPACING, num_classes=2),
        lambda: SurfaceDistanceMetric(symmetric=True, reduction="none"),
        {"neither": (NAN, NAN), "prediction only": (INF, INF), "target only": (INF, INF),
         "both": EQUAL},
    ),
    "surface_dice": (
        lambda p, t: surface_dice(p, t, SPACING, TOLERANCE_MM, num_classes=2),
        lambda: SurfaceDiceMetric([TOLERANCE_MM], reduction="none"),
        {"neither": (NAN, NAN), "prediction only": (0.0, 0.0), "target only": (0.0, 0.0),
         "both": EQUAL},
    ),
}


@pytest.mark.parametrize("case", ["neither", "prediction only", "target only", "both"])
@pytest.mark.parametrize("metric", list(TABLE))
def test_against_monai(metric: str, case: str) -> None:
    ours_fn, monai_factory, expected = TABLE[metric]
    pred, target = _case(case)
    ours = ours_fn(pred, target)
    assert ours.shape == (1, 1)
    ours_value = ours.item()
    monai_value = _monai(monai_factory(), pred, target)
    if expected[case] == EQUAL:
        assert math.isfinite(ours_value) and ours_value > 0
        assert _same(ours_value, monai_value), (ours_value, monai_value)
    else:
        ours_expected, monai_expected = expected[case]
        assert _same(monai_value, monai_expected), f"MONAI gave {monai_value}"
        assert _same(ours_value, ours_expected), f"volseg gave {ours_value}"


def _four_classes() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 in both, class 2 in the target only, class 3 in the prediction only, class 4 in
    neither."""
    target = np.zeros((1, 6, 6, 6), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, 1:3, 1:3, 1:3] = 1
    pred[0, 1:3, 1:4, 1:3] = 1
    target[0, 4, 4, 4] = 2
    pred[0, 0, 5, 5] = 3
    return pred, target


@pytest.mark.parametrize("fn", [dice, iou, volume_similarity])
def test_overlap_both_empty_changes_only_the_class_in_neither(fn) -> None:
    pred, target = (torch.from_numpy(a) for a in _four_classes())
    default = fn(pred, target, 5)[0].tolist()
    assert math.isnan(default[3]) and default[1] == default[2] == 0.0
    filled = fn(pred, target, 5, both_empty=1.0)[0].tolist()
    assert filled == default[:3] + [1.0]
    # Background is in both masks here, so include_background leaves it alone.
    with_bg = fn(pred, target, 5, include_background=True, both_empty=0.5)[0].tolist()
    assert with_bg[4] == 0.5 and with_bg[0] < 1
    with pytest.raises(TypeError):
        fn(pred, target, 5, False, 1.0)  # keyword-only


def test_surface_both_empty() -> None:
    pred, target = _four_classes()
    default = surface_metrics(pred, target, SPACING, TOLERANCE_MM, num_classes=5)
    perfect = surface_metrics(
        pred, target, SPACING, TOLERANCE_MM, num_classes=5, both_empty=BOTH_EMPTY_PERFECT
    )
    expected_fill = {"hausdorff": 0.0, "hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    for name, fill in expected_fill.items():
        assert math.isnan(default[name][0, 3])
        assert perfect[name][0].tolist() == default[name][0, :3].tolist() + [fill], name
    # One number for all four; a mapping leaves the metrics it does not name at NaN.
    zero = surface_metrics(pred, target, SPACING, TOLERANCE_MM, num_classes=5, both_empty=0.0)
    assert all(zero[name][0, 3].item() == 0.0 for name in expected_fill)
    partial = surface_metrics(
        pred, target, SPACING, 1.0, num_classes=5, both_empty={"surface_dice": 1.0}
    )
    assert partial["surface_dice"][0, 3].item() == 1.0
    assert math.isnan(partial["hd95"][0, 3])
    with pytest.raises(ValueError, match="both_empty.*nsd"):
        surface_metrics(pred, target, SPACING, 1.0, num_classes=5, both_empty={"nsd": 1.0})
    # The single-metric functions agree with surface_metrics.
    args = (pred, target, SPACING)
    single = {
        "hausdorff": hausdorff_distance(*args, num_classes=5, both_empty=0.0),
        "hd95": hausdorff_distance(*args, 95, num_classes=5, both_empty=0.0),
        "assd": average_surface_distance(*args, num_classes=5, both_empty=0.0),
        "surface_dice": surface_dice(*args, TOLERANCE_MM, num_classes=5, both_empty=1.0),
    }
    for name, values in single.items():
        torch.testing.assert_close(values, perfect[name], msg=name)
