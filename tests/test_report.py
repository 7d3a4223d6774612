"""`volseg report`: leaderboards of fabricated sweeps, checked against numbers by hand."""

from __future__ import annotations

import csv
import json
import math
import statistics
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from volseg.report import (
    aggregate_folds,
    configuration_labels,
    find_job_dirs,
    load_runs,
    rank,
    write_leaderboard,
)

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["trainer.max_epochs=5", "data.batch_size=2"]


def make_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> Path:
    """A job folder as Hydra and train.py leave it; ``metrics=None``: killed before the end."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def completed(dice_organ: float, dice_lesion: float | None, hd95: float, wall: float,
              parameters: int = 1000) -> dict[str, Any]:
    """metrics.json of a completed job; val/dice is the mean of the defined class Dice."""
    defined = [d for d in (dice_organ, dice_lesion) if d is not None]
    return {
        "val/loss": 0.5,
        "val/dice_organ": dice_organ,
        "val/dice_lesion": dice_lesion,
        "val/dice": sum(defined) / len(defined) if defined else None,
        "val/hd95": hd95,
        "status": "completed",
        "best_model_path": "checkpoints/epoch_004.ckpt",
        "epochs": 5,
        "parameters": parameters,
        "wall_time_s": wall,
    }


def failed(error: str = "RuntimeError: out of memory") -> dict[str, Any]:
    return {"status": "failed", "error": error, "wall_time_s": 3.0}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """``-m model=unet3d,res2unet3d loss=dice,dice_ce`` + one more: a failed and a missing job."""
    root = tmp_path / "multiruns" / "2026-11-23_10-00-00_1234"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    make_job(root, "0", [*COMMON, "model=unet3d", "loss=dice"], completed(0.9, 0.7, 3.0, 65.0))
    make_job(root, "1", [*COMMON, "model=unet3d", "loss=dice_ce"],
             completed(0.9, 0.8, 2.5, 70.0))
    make_job(root, "2", [*COMMON, "model=res2unet3d", "loss=dice"], failed())
    make_job(root, "3", [*COMMON, "model=res2unet3d", "loss=dice_ce"], None)
    # Neither class present in any validation case: val/dice undefined (null), still completed.
    make_job(root, "10", [*COMMON, "model=unet3d", "loss=focal"],
             completed(None, None, 4.0, 10.0))
    return root


# Fold values worked by hand. loss=dice: val/dice 0.7, 0.8, 0.9 -> mean 0.8, sample std 0.1;
# val/hd95 4, 5, 9 -> mean 6, sample std sqrt((4 + 1 + 9) / 2) = sqrt(7).
# loss=dice_ce: 0.85, 0.95 and a failed fold -> mean 0.9, sample std sqrt(0.005) = 0.0707.
FOLD_DICE = {"dice": [0.7, 0.8, 0.9], "dice_ce": [0.85, 0.95, None]}
FOLD_HD95 = {"dice": [4.0, 5.0, 9.0], "dice_ce": [2.0, 3.0, None]}


@pytest.fixture
def kfold_sweep(tmp_path: Path) -> Path:
    """``-m loss=dice,dice_ce data.fold=0,1,2``, numbered as Hydra's basic sweeper does."""
    root = tmp_path / "kfold"
    number = 0
    for loss in ("dice", "dice_ce"):
        for fold in range(3):
            dice, hd95 = FOLD_DICE[loss][fold], FOLD_HD95[loss][fold]
            metrics = failed("ValueError: fold 2 has no cases") if dice is None else \
                completed(dice, dice, hd95, 60.0 + fold)
            make_job(root, str(number), [*COMMON, f"loss={loss}", f"data.fold={fold}"], metrics)
            number += 1
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_load_runs_reads_every_job(sweep):
    runs = {r["job"]: r for r in load_runs(sweep)}
    assert list(runs) == ["0", "1", "2", "3", "10"]  # job-number order, not "10" before "2"
    assert runs["0"]["configuration"] == "model=unet3d loss=dice"
    assert runs["0"]["status"] == "completed"
    assert runs["0"]["val/dice"] == pytest.approx(0.8)
    assert runs["0"]["parameters"] == 1000
    assert runs["0"]["fold"] is None
    assert runs["2"]["status"] == "failed"
    assert runs["2"]["error"] == "RuntimeError: out of memory"
    assert runs["3"]["status"] == "missing"
    assert "val/dice" not in runs["3"]
    assert runs["10"]["val/dice"] is None


def test_a_run_folder_and_several_folders(sweep, kfold_sweep):
    (single,) = load_runs(sweep / "1")
    assert single["job"] == "1"
    assert single["configuration"] == "(common overrides)"
    both = load_runs(sweep, kfold_sweep)
    assert len(both) == 11
    assert both[0]["job"] == f"multiruns/{sweep.name}/0"
    assert both[5]["job"] == "kfold/0"


def test_configuration_is_the_overrides_that_differ():
    labels = configuration_labels([
        ["a=1", "model=unet3d", "data.fold=0"],
        ["a=1", "model=unet3d", "data.fold=1"],
        ["a=1", "model=res2unet3d", "+extra=2", "data.fold=0"],
    ])
    assert labels == ["model=unet3d", "model=unet3d", "model=res2unet3d +extra=2"]
    assert configuration_labels([[]]) == ["(defaults)"]


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


def test_find_job_dirs_names_the_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_job_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_job_dirs(tmp_path / "absent")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "volseg", "report", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_writes_the_leaderboard(sweep, tmp_path):
    result = run_cli(str(sweep), "--metric", "val/hd95", "--lower-is-better",
                     "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert ("| # | configuration | status | val/hd95 (mm) | val/dice | Dice organ | Dice lesion "
            "| parameters |") in result.stdout
    assert "| 1 | model=unet3d loss=dice_ce | completed | 2.50 | 0.850 |" in result.stdout
    assert (tmp_path / "out" / "leaderboard.md").is_file()
    assert "--metric val/hd95" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_cli_empty_folder_is_one_line_error(tmp_path):
    result = run_cli(str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path}: no job folders in it (none holds "
                                      ".hydra/ or metrics.json)")
    assert result.stdout == ""
