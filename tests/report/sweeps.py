"""Fabricated sweeps for the `volseg.report` tests: job folders as Hydra and train.py leave
them, with numbers worked by hand."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

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
