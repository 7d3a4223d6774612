"""KiTS23: case folders with imaging + segmentation, cysts optionally merged into background."""

import numpy as np
import pytest

from volseg.data.adapters.kits23 import KiTS23Layout
from volseg.io import Volume, write_volume

# KiTS23 arrays are (slices, rows, columns): the first axis has the slice thickness.
SPACING = (3.0, 0.78, 0.78)


def write_case(folder, labels=(0, 1, 2, 3), ending=".nii.gz"):
    label = np.zeros((4, 6, 6), np.uint8)
    label.flat[: len(labels)] = labels
    image = np.random.default_rng(0).normal(0, 100, label.shape).astype(np.int16)
    write_volume(Volume(image, SPACING), folder / f"imaging{ending}")
    write_volume(Volume(label, SPACING), folder / f"segmentation{ending}")


@pytest.mark.parametrize("subfolder", ["dataset", ""])
def test_lists_case_folders_under_dataset_or_root(tmp_path, subfolder):
    for i in (2, 0, 1):
        write_case(tmp_path / subfolder / f"case_{i:05d}")
    (tmp_path / subfolder / "kits23.json").write_text("[]")  # metadata beside the cases
    cases = KiTS23Layout(tmp_path).list_cases()
    assert [c.case_id for c in cases] == ["case_00000", "case_00001", "case_00002"]
    assert cases[0].image_paths[0].name == "imaging.nii.gz"
    assert cases[0].label_path.name == "segmentation.nii.gz"


def test_drop_cyst_relabels_cysts_as_background(tmp_path):
    write_case(tmp_path / "dataset" / "case_00000")
    dropped = KiTS23Layout(tmp_path)
    kept = KiTS23Layout(tmp_path, drop_cyst=False)
    (case,) = dropped.list_cases()
    assert dropped.class_names == ["background", "kidney", "tumor"]
    assert kept.class_names == ["background", "kidney", "tumor", "cyst"]
    original = kept.read_label(case).array
    relabelled = dropped.read_label(case).array
    assert np.unique(original).tolist() == [0, 1, 2, 3]
    assert np.unique(relabelled).tolist() == [0, 1, 2]
    np.testing.assert_array_equal(relabelled, np.where(original == 3, 0, original))
    assert dropped.read_label(case).geometry_mismatch(dropped.read_image(case)) is None


def test_uncompressed_nifti_and_missing_files(tmp_path):
    write_case(tmp_path / "dataset" / "case_00000", ending=".nii")
    (case,) = KiTS23Layout(tmp_path).list_cases()
    assert case.image_paths[0].name == "imaging.nii"
    (tmp_path / "dataset" / "case_00000" / "segmentation.nii").unlink()
    with pytest.raises(FileNotFoundError, match="case_00000/segmentation.nii.gz: missing"):
        KiTS23Layout(tmp_path).list_cases()
    with pytest.raises(FileNotFoundError, match="no case_\\* folders"):
        KiTS23Layout(tmp_path / "empty").list_cases()


@pytest.mark.slow
def test_trains_end_to_end_scoring_regions(tmp_path, train_layout):
    """`data=kits23`: five small cases through a short real run, cysts dropped."""
    rng = np.random.default_rng(0)
    for i in range(5):
        label = np.zeros((12, 20, 20), np.uint8)
        label[3:9, 4:12, 4:12] = 1  # kidney
        label[5:7, 6:9, 6:9] = 2  # tumor
        label[4:6, 9:11, 9:11] = 3  # cyst, dropped
        image = rng.normal(40, 20, label.shape) + 100 * (label > 0)
        folder = tmp_path / "data" / "kits23" / "dataset" / f"case_{i:05d}"
        write_volume(Volume(image.astype(np.int16), (2.0, 1.5, 1.5)), folder / "imaging.nii.gz")
        write_volume(Volume(label, (2.0, 1.5, 1.5)), folder / "segmentation.nii.gz")
    cfg, metrics = train_layout("kits23", "data.batch_size=2", "data.spacing=[2.0,1.5,1.5]")
    assert "val/dice_tumor" in metrics and "val/dice_cyst" not in metrics
    assert "val/dice_region_kidney_and_masses" in metrics  # data.regions from kits23.yaml
