"""`volseg bench nnunet`: the shared split in nnU-Net's raw layout, the table, and a tiny run
where nnunetv2 is installed (the `[peer]` extra)."""

import importlib.util
import json
import sys

import pytest

from tests.data.adapters import trees
from volseg.bench.__main__ import main
from volseg.bench.nnunet import (
    DATASET_ID,
    ToolResult,
    format_table,
    nnunet_raw_dataset,
    reuse,
    write_nnunet_split,
)

SPLIT = {"train": ["liver_000", "liver_001"], "val": ["liver_002"],
         "test": ["liver_003", "liver_004"]}


def test_raw_dataset_holds_the_split(tmp_path):
    source = tmp_path / "source"
    trees.make_nnunet(source)
    raw = nnunet_raw_dataset(source, SPLIT, tmp_path / "raw")
    assert raw.name == f"Dataset{DATASET_ID}_volseg"

    def names(folder):
        return sorted(p.name for p in (raw / folder).iterdir())

    assert names("imagesTr") == ["liver_000_0000.nii.gz", "liver_001_0000.nii.gz",
                                 "liver_002_0000.nii.gz"]
    assert names("labelsTr") == ["liver_000.nii.gz", "liver_001.nii.gz", "liver_002.nii.gz"]
    assert names("imagesTs") == ["liver_003_0000.nii.gz", "liver_004_0000.nii.gz"]
    assert names("labelsTs") == ["liver_003.nii.gz", "liver_004.nii.gz"]
    link = raw / "imagesTs" / "liver_003_0000.nii.gz"
    assert link.is_symlink() and link.resolve() == (source / "imagesTr" / link.name).resolve()
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "CT"}

    (tmp_path / "preprocessed" / raw.name).mkdir(parents=True)
    path = write_nnunet_split(tmp_path / "preprocessed", SPLIT)
    assert json.loads(path.read_text()) == [{"train": SPLIT["train"], "val": SPLIT["val"]}]


def test_a_tree_not_in_nnunets_layout_is_refused(tmp_path):
    trees.make_kits23(tmp_path / "kits")
    with pytest.raises(FileNotFoundError, match="not in nnU-Net's raw layout"):
        nnunet_raw_dataset(tmp_path / "kits", SPLIT, tmp_path / "raw")


def test_table_row_worked_by_hand():
    result = ToolResult("volseg", "steps", 600, plan_s=8.2, train_s=103.4, predict_s=12.0,
                        train_peak_mb=1507.0, dice={"organ": 0.98, "lesion": 0.9},
                        hd95={"organ": 1.1, "lesion": 2.14},
                        details={"patch": [48, 64, 16], "batch": 2, "features": [32, 64, 128]})
    table = format_table([result], ["background", "organ", "lesion"])
    assert table.splitlines()[-1] == ("| volseg | steps | 600 | 8 | 103 | 12 | 1,507 | 0.980 | "
                                      "0.900 | 0.940 | 1.1 | 2.1 | 48x64x16 | 2 | 32-128 |")
    result.hd95["lesion"] = None  # no test case had a lesion in both maps
    assert "| 1.1 | inf |" in format_table([result], ["background", "organ", "lesion"])


@pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is not None,
                    reason="nnunetv2 is installed here")
def test_without_nnunet_it_says_how_to_get_it(capsys):
    assert main(["nnunet", "--python", sys.executable]) == 2
    assert "pip install 'volseg[peer]'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_side_by_side(tmp_path, monkeypatch, capsys):
    pytest.importorskip("nnunetv2")
    monkeypatch.chdir(tmp_path)
    assert main(["nnunet", "--epochs", "1", "--iterations", "2", "--gpu-memory-gb", "0.5",
                 "--workers", "1", "--budget", "both", "--folder", str(tmp_path / "work"),
                 "--override", "data.layout.num_cases=10",
                 "--override", "data.layout.size_mm=[96,96,64]"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| nnU-Net v2 |", "| volseg |"))]
    assert len(rows) == 3  # nnU-Net, volseg at its steps, volseg at its wall time


def test_a_finished_part_is_reused_only_for_the_same_settings(tmp_path):
    path = tmp_path / "nnunet_result.json"
    runs = []

    def measure():
        runs.append(1)
        return ToolResult("nnU-Net v2", "steps", 100, train_s=12.5, dice={"organ": 0.7},
                          hd95={"organ": None})

    first = reuse(path, {"epochs": 4}, measure)
    again = reuse(path, {"epochs": 4}, measure)
    assert len(runs) == 1 and again == first and again.hd95 == {"organ": None}
    reuse(path, {"epochs": 5}, measure)
    assert len(runs) == 2
