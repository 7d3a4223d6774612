"""`volseg.report.ranking`: the ranking and the fold statistics, against numbers by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from tests.report.sweeps import (
    completed,
    make_job,
)
from volseg.report import (
    aggregate_folds,
    load_runs,
    rank,
)


def test_rank_best_first_then_undefined_failed_missing(sweep):
    ranked = rank(load_runs(sweep), "val/dice")
    assert [r["job"] for r in ranked] == ["1", "0", "10", "2", "3"]
    ranked = rank(load_runs(sweep), "val/hd95", lower_is_better=True)
    assert [r["job"] for r in ranked] == ["1", "0", "10", "2", "3"]


def test_fold_mean_and_sample_std(kfold_sweep):
    groups = {g["configuration"]: g for g in aggregate_folds(load_runs(kfold_sweep))}
    assert list(groups) == ["loss=dice", "loss=dice_ce"]
    dice, dice_ce = groups["loss=dice"], groups["loss=dice_ce"]
    assert dice["val/dice_mean"] == pytest.approx(0.8)
    assert dice["val/dice_std"] == pytest.approx(0.1)
    assert dice["val/dice_std"] == pytest.approx(statistics.stdev([0.7, 0.8, 0.9]))
    assert dice["val/hd95_mean"] == pytest.approx(6.0)
    assert dice["val/hd95_std"] == pytest.approx(math.sqrt(7))
    assert dice["wall_time_s_mean"] == pytest.approx(61.0)
    assert (dice["folds"], dice["folds_completed"], dice["status"]) == (3, 3, "completed")
    assert dice_ce["val/dice_mean"] == pytest.approx(0.9)
    assert dice_ce["val/dice_std"] == pytest.approx(math.sqrt(0.005))
    assert (dice_ce["folds"], dice_ce["folds_completed"], dice_ce["status"]) == (3, 2, "partial")
    assert dice_ce["error"] == "fold 2: ValueError: fold 2 has no cases"


def test_one_completed_fold_has_no_std(tmp_path):
    make_job(tmp_path, "0", ["data.fold=0"], completed(0.6, 0.6, 1.0, 5.0))
    make_job(tmp_path, "1", ["data.fold=1"], None)
    (group,) = aggregate_folds(load_runs(tmp_path))
    assert group["configuration"] == "(defaults)"
    assert group["val/dice_mean"] == pytest.approx(0.6)
    assert group["val/dice_std"] is None
    assert group["status"] == "partial"
