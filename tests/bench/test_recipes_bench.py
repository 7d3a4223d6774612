"""`volseg bench recipes`: the stability figures and the table, on run folders made by hand."""

import json

import pytest

from volseg.bench.__main__ import main
from volseg.bench.recipes import RECIPES, curve_drops, run_folder


def _rows(means, organ, lesion):
    """history.json's rows (`volseg.engine.history`)."""
    return [{"epoch": e, "val/dice": m, "val/dice_organ": o, "val/dice_lesion": les,
             "val/dice_ema": 0.0}
            for e, (m, o, les) in enumerate(zip(means, organ, lesion))]


def test_drops_are_counted_after_the_first_quarter_worked_by_hand():
    # 8 epochs: the first quarter is epochs 0-1, so the 0.9 -> 0.1 fall into epoch 1 is
    # forgiven; from epoch 1 on the largest falls are 0.8 -> 0.65 (mean) and 0.9 -> 0.5 (lesion).
    rows = _rows([0.9, 0.1, 0.5, 0.8, 0.65, 0.7, 0.75, 0.8],
                 [0.9, 0.2, 0.6, 0.9, 0.8, 0.8, 0.8, 0.85],
                 [0.9, 0.0, 0.4, 0.9, 0.5, 0.6, 0.7, 0.75])
    mean_drop, class_drop = curve_drops(rows)
    assert mean_drop == pytest.approx(0.15) and class_drop == pytest.approx(0.4)
    # A smoothed column named like a class (val/dice_ema) is not a class.
    rows[5]["val/dice_ema"] = -5.0
    assert curve_drops(rows) == (mean_drop, class_drop)


def test_finished_runs_are_read_not_rerun_and_tabled(tmp_path, capsys):
    for recipe, seed, lesion in (("default", 1, 0.8), ("default", 2, 0.6)):
        folder = run_folder(tmp_path, "synthetic", recipe, seed)
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({
            "test/dice_organ": 0.9, "test/dice_lesion": lesion, "test/dice": (0.9 + lesion) / 2,
            "wall_time_s": 120.0, "epochs": 12}))
        rows = _rows([0.5, 0.6, 0.7, 0.4], [0.6, 0.7, 0.8, 0.7], [0.4, 0.5, 0.6, 0.1])
        (folder / "history.json").write_text(json.dumps(rows))
    assert main(["recipes", "--phantoms", "synthetic", "--recipes", "default", "--seeds", "1",
                 "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| default | 1 | 0.900 | 0.800 | 0.850 | 0.300 | 0.500 | NO | 12 | 2.0 |" in out
    assert "| **default** | mean | 0.900 | 0.700 | 0.800 | 0.300 | 0.500 | NO | 12 | 2.0 |" in out


def test_every_recipe_composes():
    from volseg.runs.compose import compose_config

    for overrides in RECIPES.values():
        compose_config(["data=synthetic", *overrides])
