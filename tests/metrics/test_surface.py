"""Surface metrics against a hand-worked toy, MONAI, SimpleITK and medpy, on anisotropic grids."""

import math
import re
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from medpy.metric.binary import assd as medpy_assd
from medpy.metric.binary import hd95 as medpy_hd95
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import ndimage

from volseg.metrics import (
    average_surface_distance,
    hausdorff_distance,
    surface_dice,
    surface_distances,
    surface_metrics,
)
from volseg.metrics.surface import check_tolerances

# Every axis a different size and voxel size, so a transposed axis changes the numbers.
SHAPE = (23, 17, 12)
SPACING = (0.7, 1.1, 2.5)


def _line_toy() -> tuple[np.ndarray, np.ndarray]:
    """A 1 x 1 x 10 grid at 2 mm along z: prediction z = 2..6, target z = 2..3.

    Every voxel touches the image border, so every voxel is a surface voxel.
    d_PT = [0, 0, 2, 4, 6] mm, d_TP = [0, 0] mm.
    """
    pred = np.zeros((1, 1, 10), dtype=np.int64)
    target = np.zeros_like(pred)
    pred[0, 0, 2:7] = 1
    target[0, 0, 2:4] = 1
    return pred, target


def test_hand_worked_line() -> None:
    pred, target = _line_toy()
    spacing = (1.0, 1.0, 2.0)
    d_pt, d_tp = surface_distances(pred, target, spacing)
    assert d_pt.tolist() == [0, 0, 2, 4, 6]
    assert d_tp.tolist() == [0, 0]
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    args = (p, t, spacing)
    assert hausdorff_distance(*args, num_classes=2).item() == pytest.approx(6.0)
    # Directed P95 of [0,0,2,4,6]: rank 0.95*4 = 3.8 -> 4 + 0.8*2 = 5.6; of [0,0]: 0.
    assert hausdorff_distance(*args, 95, num_classes=2).item() == pytest.approx(5.6)
    # Pooled [0,0,0,0,2,4,6]: rank 0.95*6 = 5.7 -> 4 + 0.7*2 = 5.4.
    assert hausdorff_distance(*args, 95, pooled=True, num_classes=2).item() == pytest.approx(5.4)
    assert average_surface_distance(*args, num_classes=2).item() == pytest.approx(12 / 7)
    assert average_surface_distance(*args, symmetric=False, num_classes=2).item() == (
        pytest.approx(12 / 5)
    )
    # Within 2 mm: 0, 0, 2 of the prediction and both of the target -> 5 of 7.
    assert surface_dice(*args, 2.0, num_classes=2).item() == pytest.approx(5 / 7)
    assert surface_dice(*args, 1.9, num_classes=2).item() == pytest.approx(4 / 7)


def test_surface_is_the_face_connected_border() -> None:
    # A 3x3x3 cube inside a 5x5x5 grid: 26 surface voxels, the centre is interior.
    cube = np.zeros((5, 5, 5), dtype=bool)
    cube[1:4, 1:4, 1:4] = True
    d_pt, d_tp = surface_distances(cube, cube)
    assert d_pt.size == d_tp.size == 26
    assert not d_pt.any()
    # Touching the image border: a full 5x5x5 block has 5^3 - 3^3 = 98 surface voxels.
    full = np.ones((5, 5, 5), dtype=bool)
    assert surface_distances(full, full)[0].size == 98


def test_spacing_follows_array_axes() -> None:
    a = np.zeros((8, 8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[5, 2, 2] = True  # three voxels apart along axis 0
    assert hausdorff_distance(
        a[None, None], b[None, None], (2.0, 1.0, 1.0), include_background=True
    ).item() == pytest.approx(6.0)
    assert hausdorff_distance(
        a[None, None], b[None, None], (1.0, 1.0, 2.0), include_background=True
    ).item() == pytest.approx(3.0)


def _random_labels(seed: int, num_classes: int = 3, cases: int = 2) -> np.ndarray:
    """Blobby label maps: smoothed noise thresholded per class, so surfaces are irregular."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((cases, *SHAPE), dtype=np.int64)
    for case in range(cases):
        for c in range(1, num_classes):
            field = ndimage.gaussian_filter(rng.standard_normal(SHAPE), sigma=2.0)
            labels[case][field > 0.12] = c
    return labels


def _perturbed(labels: np.ndarray, seed: int) -> np.ndarray:
    """A 'prediction': the labels shifted by a voxel on one axis, with some voxels flipped."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, 1, axis=1)
    flip = rng.random(labels.shape) < 0.01
    pred[flip] = rng.integers(0, labels.max() + 1, flip.sum())
    return pred


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(labels), num_classes).movedim(-1, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_monai(seed: int) -> None:
    target = _random_labels(seed)
    pred = _perturbed(target, seed)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    p_oh, t_oh = _one_hot(pred, 3), _one_hot(target, 3)
    tolerances = [1.0, 2.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = {
            "hausdorff": compute_hausdorff_distance(p_oh, t_oh, spacing=list(SPACING)),
            "hd95": compute_hausdorff_distance(p_oh, t_oh, percentile=95, spacing=list(SPACING)),
            "assd": compute_average_surface_distance(
                p_oh, t_oh, symmetric=True, spacing=list(SPACING)
            ),
            "surface_dice": compute_surface_dice(p_oh, t_oh, tolerances, spacing=list(SPACING)),
            "directed_asd": compute_average_surface_distance(
                p_oh, t_oh, symmetric=False, spacing=list(SPACING)
            ),
        }
    ours = surface_metrics(p, t, SPACING, tolerances, num_classes=3)
    ours["directed_asd"] = average_surface_distance(p, t, SPACING, symmetric=False, num_classes=3)
    for name, expected in reference.items():
        assert ours[name].shape == (2, 2)
        # MONAI returns float32 distances; both take the same voxel centres, so they agree to
        # float32 rounding.
        torch.testing.assert_close(ours[name], expected.float(), rtol=1e-5, atol=1e-5, msg=name)
    # The single-metric functions give what surface_metrics gives, one-hot input included.
    torch.testing.assert_close(hausdorff_distance(p_oh, t_oh, SPACING, 95), ours["hd95"])
    torch.testing.assert_close(
        surface_dice(p, t, SPACING, tolerances, num_classes=3), ours["surface_dice"]
    )


def _sitk_image(mask: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.T.astype(np.uint8))  # sitk indexes (z, y, x)
    image.SetSpacing(SPACING)
    return image


@pytest.mark.parametrize("seed", [0, 3])
def test_hausdorff_matches_simpleitk(seed: int) -> None:
    target = _random_labels(seed, num_classes=2, cases=1)[0] == 1
    pred = _perturbed(target.astype(np.int64), seed + 10) == 1
    measure = sitk.HausdorffDistanceImageFilter()
    measure.Execute(_sitk_image(pred), _sitk_image(target))
    ours = hausdorff_distance(
        pred[None, None], target[None, None], SPACING, include_background=True
    )
    # SimpleITK works in float64, we return float32.
    assert ours.item() == pytest.approx(measure.GetHausdorffDistance(), rel=1e-6)


def test_pooled_hd95_and_assd_match_medpy() -> None:
    target = _random_labels(5, num_classes=2, cases=1)[0] == 1
    pred = _perturbed(target.astype(np.int64), 6) == 1
    p, t = pred[None, None], target[None, None]
    ours_hd95 = hausdorff_distance(p, t, SPACING, 95, pooled=True, include_background=True)
    assert ours_hd95.item() == pytest.approx(
        medpy_hd95(pred, target, voxelspacing=SPACING), rel=1e-6
    )
    ours_assd = average_surface_distance(p, t, SPACING, include_background=True)
    assert ours_assd.item() == pytest.approx(
        medpy_assd(pred, target, voxelspacing=SPACING), rel=1e-6
    )
    # Pooling never raises the percentile above the larger directed one.
    assert (
        ours_hd95.item()
        <= hausdorff_distance(p, t, SPACING, 95, include_background=True).item() + 1e-6
    )


def test_empty_conventions() -> None:
    # class 1 in both, class 2 only in the target, class 3 only in the prediction, class 4 in
    # neither.
    target = np.zeros((1, 6, 6, 6), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, 1:3, 1:3, 1:3] = 1
    pred[0, 1:3, 1:4, 1:3] = 1
    target[0, 4, 4, 4] = 2
    pred[0, 0, 5, 5] = 3
    values = surface_metrics(pred, target, SPACING, 1.0, num_classes=5)
    for name in ("hausdorff", "hd95", "assd"):
        row = values[name][0].tolist()
        assert math.isfinite(row[0]) and row[0] > 0, name
        assert row[1] == row[2] == math.inf, name
        assert math.isnan(row[3]), name
    nsd = values["surface_dice"][0].tolist()
    assert 0 < nsd[0] <= 1 and nsd[1] == nsd[2] == 0.0 and math.isnan(nsd[3])


def test_spacing_per_case() -> None:
    pred, target = _line_toy()
    batch_p = torch.from_numpy(np.stack([pred, pred]))
    batch_t = torch.from_numpy(np.stack([target, target]))
    hd = hausdorff_distance(batch_p, batch_t, [(1, 1, 2), (1, 1, 0.5)], num_classes=2)
    assert hd[:, 0].tolist() == pytest.approx([6.0, 1.5])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, t: hausdorff_distance(p, t, (1, 1), num_classes=2), "spacing"),
        (lambda p, t: hausdorff_distance(p, t, (1, 1, 0), num_classes=2), "spacing"),
        (lambda p, t: hausdorff_distance(p, t, None, 101, num_classes=2), "percentile"),
        (lambda p, t: hausdorff_distance(p, t), "num_classes"),
        (lambda p, t: surface_dice(p, t, None, [1, 2], num_classes=2), "tolerance_mm"),
        (lambda p, t: surface_dice(p, t, None, -1.0, num_classes=2), "tolerance_mm"),
        # NaN would score every case 0 silently (d <= nan is False); inf accepts anything.
        (lambda p, t: surface_dice(p, t, None, math.nan, num_classes=2), "tolerance_mm.*nan"),
        (lambda p, t: surface_dice(p, t, None, math.inf, num_classes=2), "tolerance_mm.*inf"),
        (
            lambda p, t: surface_dice(p, t, None, [1.0, math.nan], num_classes=3),
            r"tolerance_mm.*\[1.0, nan\]",
        ),
        (
            lambda p, t: surface_metrics(p, t, None, np.float32("nan"), num_classes=2),
            "tolerance_mm.*nan",
        ),
        (lambda p, t: hausdorff_distance(p, t[..., :5], num_classes=2), "shapes differ"),
        (lambda p, t: hausdorff_distance(p + 2, t, num_classes=2), "labels must lie"),
    ],
)
def test_bad_arguments(call, message: str) -> None:
    pred, target = (torch.from_numpy(a) for a in _line_toy())
    with pytest.raises(ValueError, match=message):
        call(pred, target)


def test_check_tolerances() -> None:
    assert check_tolerances(0.0, 2).tolist() == [0.0, 0.0]  # zero: exact surface agreement
    assert check_tolerances([1, 2.5], 2).tolist() == [1.0, 2.5]
    for bad in (math.nan, -0.5, math.inf, [2.0, -math.inf]):
        with pytest.raises(ValueError, match=f"tolerance_mm must be finite.*{re.escape(str(bad))}"):
            check_tolerances(bad, 2)
    with pytest.raises(ValueError, match="one per scored class"):
        check_tolerances([1.0, 2.0, 3.0], 2)
