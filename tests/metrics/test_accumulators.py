"""Per-class accumulators: means over cases, NaN and empty-mask handling, and DDP sync."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from volseg.metrics import (
    AverageSurfaceDistanceMetric,
    DiceMetric,
    HausdorffDistanceMetric,
    SurfaceDiceMetric,
    hausdorff_distance,
    update_surface_metrics,
)


def _cube_case(offset: int, size: int = 3, grid: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """One case: target cube at 1.., prediction the same cube moved ``offset`` voxels on x."""
    target = torch.zeros(1, grid, grid, grid, dtype=torch.long)
    pred = torch.zeros_like(target)
    target[0, 1 : 1 + size, 1 : 1 + size, 1 : 1 + size] = 1
    pred[0, 1 + offset : 1 + offset + size, 1 : 1 + size, 1 : 1 + size] = 1
    return pred, target


def test_hausdorff_mean_over_cases() -> None:
    metric = HausdorffDistanceMetric(num_classes=2, percentile=None)
    spacing = (2.0, 1.0, 1.0)
    for offset in (0, 1, 2):
        metric.update(*_cube_case(offset), spacing)
    # A cube moved k voxels along x at 2 mm: HD = 2k mm -> mean of 0, 2, 4.
    assert metric.per_class().tolist() == pytest.approx([2.0])


def test_class_in_neither_is_skipped_and_class_in_one_is_penalised() -> None:
    pred, target = _cube_case(1)
    empty = torch.zeros_like(pred)
    metric = HausdorffDistanceMetric(num_classes=2, percentile=None)
    metric.update(pred, target)  # HD 1 mm
    metric.update(empty, empty)  # undefined: left out
    assert metric.per_class().tolist() == pytest.approx([1.0])
    metric.update(empty, target)  # in the target only: the 8x8x8 image's diagonal
    diagonal = math.sqrt(3 * 8.0**2)
    assert metric.per_class().tolist() == pytest.approx([(1.0 + diagonal) / 2])
    fixed = AverageSurfaceDistanceMetric(num_classes=2, empty_penalty_mm=100.0)
    fixed.update(empty, target)
    assert fixed.per_class().tolist() == pytest.approx([100.0])


def test_surface_dice_per_class_tolerance() -> None:
    # Class 1: cube moved 1 voxel (1 mm); class 2: a cube moved 2 voxels.
    pred, target = _cube_case(1, grid=12)
    pred2, target2 = _cube_case(2, grid=12)
    pred = pred + 2 * torch.roll(pred2, 6, dims=3)
    target = target + 2 * torch.roll(target2, 6, dims=3)
    metric = SurfaceDiceMetric(num_classes=3, tolerance_mm=[1.0, 2.0])
    metric.update(pred, target)
    assert metric.per_class().tolist() == pytest.approx([1.0, 1.0])
    strict = SurfaceDiceMetric(num_classes=3, tolerance_mm=0.5)
    strict.update(pred, target)
    assert (strict.compute() < 1).all()


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        hd = HausdorffDistanceMetric(num_classes=2, percentile=None)
        dice = DiceMetric(num_classes=2)
        # Rank r sees only case r.
        pred, target = _cube_case(rank + 1)
        hd.update(pred, target)
        dice.update(pred, target)
        values = torch.stack([hd.per_class()[0], dice.per_class()[0]])
        torch.save(values, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_mean_over_all_cases(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    # In one process, over both cases: HD 1 and 2 mm; Dice of 3x3x3 cubes moved 1 and 2 voxels.
    expected = torch.tensor([1.5, (2 * 18 / 54 + 2 * 9 / 54) / 2])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got, expected)


def test_update_accepts_one_spacing_per_case() -> None:
    pred = torch.cat([_cube_case(1)[0], _cube_case(1)[0]])
    target = torch.cat([_cube_case(1)[1], _cube_case(1)[1]])
    metric = HausdorffDistanceMetric(num_classes=2, percentile=None)
    metric.update(pred, target, np.array([[1.0, 1, 1], [3.0, 1, 1]]))
    assert metric.per_class().tolist() == pytest.approx([2.0])
    per_case = hausdorff_distance(pred, target, [[1.0, 1, 1], [3.0, 1, 1]], num_classes=2)
    assert per_case[:, 0].tolist() == pytest.approx([1.0, 3.0])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HausdorffDistanceMetric(num_classes=1), "num_classes"),
        (lambda: HausdorffDistanceMetric(num_classes=2, percentile=-1), "percentile"),
        (
            lambda: AverageSurfaceDistanceMetric(num_classes=2, empty_penalty_mm=-1),
            "empty_penalty_mm",
        ),
        (lambda: SurfaceDiceMetric(num_classes=3, tolerance_mm=[1, 2, 3]), "tolerance_mm"),
        (lambda: SurfaceDiceMetric(num_classes=2, tolerance_mm=math.nan), "tolerance_mm.*nan"),
        (lambda: SurfaceDiceMetric(num_classes=2, tolerance_mm=-1.0), "tolerance_mm.*-1.0"),
        (lambda: SurfaceDiceMetric(num_classes=2, tolerance_mm=math.inf), "tolerance_mm.*inf"),
        (
            lambda: SurfaceDiceMetric(num_classes=3, tolerance_mm=[2.0, math.nan]),
            r"tolerance_mm.*\[2.0, nan\]",
        ),
    ],
)
def test_bad_arguments(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_volume_similarity_mean_over_cases_skips_absent_classes() -> None:
    from volseg.metrics import VolumeSimilarityMetric

    metric = VolumeSimilarityMetric(num_classes=3)
    pred = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    target = torch.zeros_like(pred)
    # Case 0: class 1 predicted on 2 voxels, 6 in the target (1 - 4/8); class 2 in neither.
    pred[0, 0, 0, :2] = 1
    target[0, 1, :3, :2] = 1
    # Case 1: class 1 on 3 voxels in both, elsewhere (volumes only: 1); class 2 predicted only.
    pred[1, 0, 0, :3] = 1
    target[1, 3, 3, 1:] = 1
    pred[1, 2, 2, :] = 2
    metric.update(pred, target)
    assert metric.per_class().tolist() == pytest.approx([(0.5 + 1.0) / 2, 0.0])
    assert metric.count.tolist() == [2, 1]


def test_surface_metrics_updated_together_equal_each_alone_from_one_distance_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import volseg.metrics.surface as surface

    def build() -> list:
        return [HausdorffDistanceMetric(3, percentile=95),
                HausdorffDistanceMetric(3, percentile=None),
                AverageSurfaceDistanceMetric(3), SurfaceDiceMetric(3, tolerance_mm=1.0)]

    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.integers(0, 3, (2, 10, 9, 8)))
    target = torch.from_numpy(rng.integers(0, 3, (2, 10, 9, 8)))
    target[1][target[1] == 2] = 0  # class 2 in one mask only: the empty-mask penalty path
    spacing = (1.5, 1.0, 2.0)
    alone, together = build(), build()
    for metric in alone:
        metric.update(pred, target, spacing)
    calls = []
    counted = surface.surface_distances
    monkeypatch.setattr(surface, "surface_distances",
                        lambda *a, **k: calls.append(1) or counted(*a, **k))
    update_surface_metrics(together, pred, target, spacing)
    assert len(calls) == 2 * 2  # cases x foreground classes, not x 4 metrics
    for one, shared in zip(alone, together, strict=True):
        assert torch.equal(one.compute(), shared.compute())


def test_surface_metrics_updated_together_must_score_the_same_classes() -> None:
    with pytest.raises(ValueError, match="same classes"):
        update_surface_metrics([HausdorffDistanceMetric(3), SurfaceDiceMetric(2, 1.0)],
                               torch.zeros(1, 4, 4, 4, dtype=torch.long),
                               torch.zeros(1, 4, 4, 4, dtype=torch.long))
