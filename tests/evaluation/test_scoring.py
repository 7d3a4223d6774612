"""`volseg evaluate`: scores, reports, overlays and failures on fabricated folders."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from volseg.evaluation import evaluate
from volseg.io import Volume, read_volume, write_volume
from volseg.io.overlay import write_png

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
    assert len(rows) == 4 and {r["structure"] for r in rows} == {"kidney", "tumour"}
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


# --- a dataset's own terms: its layout, its label remap, its regions ---------------------------


def _kits23_predictions(tree: Path, folder: Path) -> dict[str, np.ndarray]:
    """A prediction per case: its reference with cysts dropped, the kidney moved one row.

    Returns the references as training reads them (cyst -> background), by case.
    """
    from volseg.data.adapters.kits23 import KiTS23Layout

    layout = KiTS23Layout(tree)
    references = {}
    for case in layout.list_cases():
        reference = layout.read_label(case)
        prediction = np.roll(reference.array, 1, axis=1)
        write_volume(reference.with_array(prediction.astype(np.uint8)),
                     folder / f"{case.case_id}.nii.gz")
        references[case.case_id] = reference
    return references


def test_gt_dataset_root_applies_the_layouts_remap_and_scores_regions(tmp_path):
    from tests.data.adapters import trees

    tree = tmp_path / "kits23"
    trees.make_kits23(tree, cases=3)
    references = _kits23_predictions(tree, tmp_path / "pred")
    regions = {"kidney_and_masses": [1, 2], "masses": [2]}
    report = evaluate(tmp_path / "pred", tree, tmp_path / "out",
                      class_names=["background", "kidney", "tumor"], regions=regions,
                      metrics=["dice", "iou", "hausdorff"])
    assert report["failed"] == [] and len(report["cases"]) == 3
    assert list(report["summary"]) == ["kidney", "tumor", "region_kidney_and_masses",
                                       "region_masses"]
    for case in report["cases"]:
        reference = references[case["case"]]
        prediction = read_volume(tmp_path / "pred" / f"{case['case']}.nii.gz")
        for name, labels in (("kidney", [1]), ("region_kidney_and_masses", [1, 2])):
            p, r = (np.isin(v.array, labels).astype(np.uint8) for v in (prediction, reference))
            # Independent references: SimpleITK's overlap and Hausdorff filters, in world mm.
            p_image, r_image = (reference.with_array(m).to_sitk() for m in (p, r))
            measures = sitk.LabelOverlapMeasuresImageFilter()
            measures.Execute(r_image, p_image)
            assert case["metrics"]["dice"][name] == pytest.approx(
                measures.GetDiceCoefficient(1), abs=1e-6)
            assert case["metrics"]["iou"][name] == pytest.approx(
                measures.GetJaccardCoefficient(1), abs=1e-6)
            hausdorff = sitk.HausdorffDistanceImageFilter()
            hausdorff.Execute(r_image, p_image)
            assert case["metrics"]["hausdorff"][name] == pytest.approx(
                hausdorff.GetHausdorffDistance(), abs=1e-4)
    table = (tmp_path / "out" / "evaluation.md").read_text()
    assert "| region_kidney_and_masses |" in table and "| mean over classes |" in table

    # The same references as plain files keep KiTS23's cysts: named as the culprit.
    for case in references:
        source = tree / "dataset" / case / "segmentation.nii.gz"
        write_volume(read_volume(source), tmp_path / "flat" / f"{case}.nii.gz")
    report = evaluate(tmp_path / "pred", tmp_path / "flat", tmp_path / "out2",
                      class_names=["background", "kidney", "tumor"])
    assert len(report["failed"]) == 3
    for case, reason in report["failed"]:
        assert reason == (f"{tmp_path / 'flat' / case}.nii.gz: label values [3] outside 0..2 "
                          "(num_classes=3)")


def test_a_recognised_dataset_with_another_class_count_is_refused(tmp_path):
    from tests.data.adapters import trees

    trees.make_kits23(tmp_path / "kits23", cases=1)
    _kits23_predictions(tmp_path / "kits23", tmp_path / "pred")
    with pytest.raises(ValueError, match=r"KiTS23Layout dataset whose default settings give 3 "
                                         r"classes .* the predictions 4: pass its data config"):
        evaluate(tmp_path / "pred", tmp_path / "kits23", tmp_path / "out",
                 class_names=["background", "kidney", "tumor", "cyst"])


def test_no_reference_files_is_said_as_such(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no reference files found under .*empty"):
        evaluate(folders["pred"], tmp_path / "empty", folders["out"])


def test_chosen_metrics_background_shapes_and_the_class_means(folders):
    report = evaluate(folders["pred"], folders["gt"], folders["out"],
                      class_names=["bg", "kidney", "tumour"], metrics=["iou"],
                      include_background=True)
    assert list(report["summary"]) == ["bg", "kidney", "tumour"]
    assert all(list(case["metrics"]) == ["iou"] for case in report["cases"])
    assert [case["shape"] for case in report["cases"]] == [[20, 18, 10], [20, 18, 10]]
    means = {name: report["summary"][name]["iou"]["mean"] for name in ("bg", "kidney", "tumour")}
    assert report["mean"]["foreground"]["iou"] == pytest.approx(
        (means["kidney"] + means["tumour"]) / 2)
    assert report["mean"]["all_classes"]["iou"] == pytest.approx(sum(means.values()) / 3)
    table = (folders["out"] / "evaluation.md").read_text()
    assert "| mean over classes (with background) |" in table


def test_an_infinite_distance_is_explained_and_both_empty_is_a_choice(folders):
    prediction = read_volume(folders["pred"] / "b.nii.gz")
    prediction.array[prediction.array == 2] = 0  # the tumour is missed in case b
    write_volume(prediction, folders["pred"] / "b.nii.gz")
    for case in ("a", "b"):  # and neither map of case a has it ... nor case b's reference
        for folder in ("pred", "gt"):
            volume = read_volume(folders[folder] / f"{case}.nii.gz")
            if case == "a":
                volume.array[volume.array == 2] = 0
            write_volume(volume, folders[folder] / f"{case}.nii.gz")
    report = evaluate(folders["pred"], folders["gt"], folders["out"], metrics=["dice", "hd95"])
    tumour = report["summary"]["class_2"]
    assert (tumour["dice"]["undefined"], tumour["dice"]["n"]) == (1, 1)  # a: in neither map
    assert (tumour["hd95"]["infinite"], tumour["hd95"]["undefined"]) == (1, 1)  # b: missed
    table = (folders["out"] / "evaluation.md").read_text()
    assert "(1 inf, 1 undef.)" in table and "whose distances are infinite" in table
    perfect = evaluate(folders["pred"], folders["gt"], folders["out"], metrics=["dice", "hd95"],
                       both_empty="perfect")
    by_case = {c["case"]: c["metrics"] for c in perfect["cases"]}
    assert by_case["a"]["dice"]["class_2"] == 1.0 and by_case["a"]["hd95"]["class_2"] == 0.0
    assert by_case["b"]["hd95"]["class_2"] == "inf"  # one map empty stays infinite
    with pytest.raises(ValueError, match="both_empty must be one of"):
        evaluate(folders["pred"], folders["gt"], folders["out"], both_empty="one")
    with pytest.raises(ValueError, match="metrics: \\['hd99'\\]; choose among dice"):
        evaluate(folders["pred"], folders["gt"], folders["out"], metrics=["hd99"])
