"""`volseg.report.leaderboard`: the files a leaderboard writes, for plain and k-fold sweeps."""

from __future__ import annotations

import math

import pytest

from tests.report.sweeps import (
    COMMON,
    png_size,
    read_csv,
)
from volseg.report import (
    write_leaderboard,
)


def test_leaderboard_files(sweep, capsys):
    written = write_leaderboard([sweep])
    assert set(written) == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    assert all(path.parent == sweep for path in written.values())

    rows = read_csv(sweep / "leaderboard.csv")
    assert [r["job"] for r in rows] == ["1", "0", "10", "2", "3"]
    assert list(rows[0])[:5] == ["job", "configuration", "fold", "status", "val/dice"]
    assert float(rows[0]["val/dice"]) == pytest.approx(0.85)  # round trip: every digit kept
    assert float(rows[0]["val/dice_lesion"]) == 0.8
    assert int(rows[0]["parameters"]) == 1000
    assert rows[0]["overrides"] == " ".join([*COMMON, "model=unet3d", "loss=dice_ce"])
    assert rows[2]["val/dice"] == ""
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "RuntimeError: out of memory"
    assert rows[4]["status"] == "missing" and rows[4]["val/dice"] == ""

    width, height = png_size(sweep / "leaderboard.png")
    assert width > 400 and height > 150
    assert (sweep / "leaderboard.png").stat().st_size > 5_000

    markdown = (sweep / "leaderboard.md").read_text()
    assert "trainer.max_epochs=5 data.batch_size=2" in markdown  # shared overrides, said once
    assert "5 jobs" in markdown and "3 completed, 1 failed, 1 missing" in markdown
    assert ("| # | configuration | status | val/dice | Dice organ | Dice lesion | val/hd95 (mm) "
            "| parameters | epochs | wall time | error | job |") in markdown
    assert ("| 1 | model=unet3d loss=dice_ce | completed | 0.850 | 0.900 | 0.800 | 2.50 | 1,000 "
            "| 5 | 1 min 10 s |  | 1 |") in markdown
    assert "| 3 | model=unet3d loss=focal | completed | — |" in markdown
    assert "| 4 | model=res2unet3d loss=dice | failed | — |" in markdown
    assert "RuntimeError: out of memory | 2 |" in markdown
    assert "| 5 | model=res2unet3d loss=dice_ce | missing |" in markdown
    out = capsys.readouterr().out
    assert "| 1 | model=unet3d loss=dice_ce | completed | 0.850 |" in out
    assert "wrote " + str(sweep / "leaderboard.png") in out


def test_kfold_leaderboard_files(kfold_sweep, tmp_path):
    output = tmp_path / "report"
    written = write_leaderboard([kfold_sweep], output=output)
    assert set(written) == {"leaderboard.md", "leaderboard.csv", "leaderboard_jobs.csv",
                            "leaderboard.png"}

    groups = read_csv(output / "leaderboard.csv")
    assert [g["configuration"] for g in groups] == ["loss=dice_ce", "loss=dice"]
    assert float(groups[1]["val/dice_mean"]) == pytest.approx(0.8)
    assert float(groups[1]["val/dice_std"]) == pytest.approx(0.1)
    assert float(groups[1]["val/hd95_std"]) == pytest.approx(math.sqrt(7))
    assert (groups[0]["folds"], groups[0]["folds_completed"]) == ("3", "2")
    assert groups[0]["jobs"] == "3 4 5"

    jobs = read_csv(output / "leaderboard_jobs.csv")
    assert [(j["configuration"], j["fold"]) for j in jobs] == [
        ("loss=dice_ce", "0"), ("loss=dice_ce", "1"), ("loss=dice_ce", "2"),
        ("loss=dice", "0"), ("loss=dice", "1"), ("loss=dice", "2")]
    assert jobs[2]["status"] == "failed"

    markdown = (output / "leaderboard.md").read_text()
    assert "sample standard deviation (n - 1)" in markdown
    assert "| 1 | loss=dice_ce | 2/3 | partial | 0.900 ± 0.071 |" in markdown
    assert "| 2 | loss=dice | 3/3 | completed | 0.800 ± 0.100 |" in markdown
    assert "6.00 ± 2.65" in markdown
    assert "fold 2: ValueError: fold 2 has no cases" in markdown
    assert "## Jobs" in markdown and "| fold |" in markdown
    assert png_size(output / "leaderboard.png")[1] > 150


def test_a_metric_no_job_has_is_a_warning(kfold_sweep, capsys):
    write_leaderboard([kfold_sweep], metric="test/dice")
    assert "warning: no job has a value for test/dice" in capsys.readouterr().err
    groups = read_csv(kfold_sweep / "leaderboard.csv")
    assert [g["test/dice_mean"] for g in groups] == ["", ""]
    assert sorted(p.name for p in kfold_sweep.iterdir() if p.is_file()) == [
        "leaderboard.csv", "leaderboard.md", "leaderboard.png", "leaderboard_jobs.csv"]
