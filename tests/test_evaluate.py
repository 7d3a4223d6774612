"""`volseg evaluate`: scores, reports, overlays and failures on fabricated folders."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from volseg.evaluate import evaluate
from volseg.io import Volume, read_volume, write_volume
from volseg.overlay import write_png

SPACING = (0.8, 0.9, 2.5)
ORIGIN = (-10.0, 5.0, 30.0)


def _case(shift: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, reference and a prediction shifted by ``shift`` voxels along x (class 1 box,
    class 2 small box)."""
    rng = np.random.default_rng(seed)
    reference = np.zeros((20, 18, 10), np.uint8)
    reference[4:12, 5:13, 2:7] = 1
    reference[14:17, 3:6, 3:6] = 2
    prediction = np.roll(reference, shift, axis=0)
    image = rng.normal(0, 1, reference.shape).astype(np.float32) + 3 * reference
    return image, reference, prediction


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("pred", "gt", "images", "out")}
    for case, shift in (("a", 0), ("b", 1)):
        image, reference, prediction = _case(shift, seed=len(case))
        write_volume(Volume(image, SPACING, ORIGIN), paths["images"] / f"{case}_0000.nii.gz")
        write_volume(Volume(reference, SPACING, ORIGIN), paths["gt"] / f"{case}.nii.gz")
        write_volume(Volume(prediction, SPACING, ORIGIN), paths["pred"] / f"{case}.nii.gz")
    return paths


def test_scores_match_simpleitk_and_reports_are_written(folders) -> None:
    report = evaluate(folders["pred"], folders["gt"], folders["out"], num_classes=3,
                      class_names=["bg", "kidney", "tumour"], images=folders["images"])
    assert report["failed"] == []
    by_case = {c["case"]: c for c in report["cases"]}
    assert by_case["a"]["metrics"]["dice"] == {"kidney": 1.0, "tumour": 1.0}
    assert by_case["a"]["metrics"]["hd95"] == {"kidney": 0.0, "tumour": 0.0}
    # Case b, checked against SimpleITK's overlap measures on the written files.
    measures = sitk.LabelOverlapMeasuresImageFilter()
    measures.Execute(sitk.ReadImage(str(folders["gt"] / "b.nii.gz")),
                     sitk.ReadImage(str(folders["pred"] / "b.nii.gz")))
    for label, name in ((1, "kidney"), (2, "tumour")):
        assert by_case["b"]["metrics"]["dice"][name] == pytest.approx(
            measures.GetDiceCoefficient(label), abs=1e-6)
        assert by_case["b"]["metrics"]["iou"][name] == pytest.approx(
            measures.GetJaccardCoefficient(label), abs=1e-6)
    # A box moved one voxel (0.8 mm) along x: every surface distance is 0 or 0.8 mm.
    assert by_case["b"]["metrics"]["hd95"]["kidney"] == pytest.approx(0.8, abs=1e-5)
    summary = report["summary"]["kidney"]["dice"]
    assert summary["n"] == 2
    assert summary["mean"] == pytest.approx((1 + by_case["b"]["metrics"]["dice"]["kidney"]) / 2)
    saved = json.loads((folders["out"] / "evaluation.json").read_text())
    assert saved["settings"]["class_names"] == ["bg", "kidney", "tumour"]
    rows = list(csv.DictReader((folders["out"] / "evaluation.csv").open()))
    assert len(rows) == 4 and {r["class"] for r in rows} == {"kidney", "tumour"}
    assert (folders["out"] / "overlays" / "a.png").is_file()


def test_missing_reference_and_grid_mismatch_fail_only_their_case(folders) -> None:
    (folders["gt"] / "a.nii.gz").rename(folders["gt"] / "unpredicted.nii.gz")
    moved = read_volume(folders["pred"] / "b.nii.gz")
    moved.origin = (0.0, 0.0, 0.0)
    write_volume(moved, folders["pred"] / "b.nii.gz")
    write_volume(read_volume(folders["gt"] / "unpredicted.nii.gz"), folders["gt"] / "c.nii.gz")
    write_volume(read_volume(folders["gt"] / "c.nii.gz"), folders["pred"] / "c.nii.gz")
    report = evaluate(folders["pred"], folders["gt"], folders["out"])
    reasons = dict(report["failed"])
    assert "no reference" in reasons["a"]
    assert report["unpredicted"] == ["unpredicted"]
    assert "b.nii.gz" in reasons["b"] and "origin" in reasons["b"]
    assert [c["case"] for c in report["cases"]] == ["c"]
    # Classes inferred from the largest label found.
    assert report["settings"]["class_names"] == ["background", "class_1", "class_2"]


def test_overlay_png_decodes_with_the_label_colours(folders, tmp_path) -> None:
    image = pytest.importorskip("PIL.Image")
    evaluate(folders["pred"], folders["gt"], folders["out"], images=folders["images"])
    with image.open(folders["out"] / "overlays" / "b.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[2] == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
    # Label 1 blends its palette colour into the grey image: red dominates somewhere.
    assert ((pixels[..., 0].astype(int) - pixels[..., 1]) > 60).any()
    # And the encoder itself round-trips exactly.
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_png(rgb, tmp_path / "x.png")
    with image.open(tmp_path / "x.png") as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), rgb)


def test_command_line_exit_codes(folders) -> None:
    command = [sys.executable, "-m", "volseg", "evaluate", f"pred={folders['pred']}",
               f"gt={folders['gt']}", f"output={folders['out']}"]
    ok = subprocess.run(command, capture_output=True, text=True, cwd=folders["out"].parent)
    assert ok.returncode == 0, ok.stderr
    assert "case(s) scored" in ok.stdout
    (folders["gt"] / "a.nii.gz").unlink()
    failed = subprocess.run(command, capture_output=True, text=True, cwd=folders["out"].parent)
    assert failed.returncode == 1
    assert "no reference" in failed.stdout + failed.stderr
