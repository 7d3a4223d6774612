"""predict inputs: list files, DICOM series folders, nnU-Net channels, bad cases."""

from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.data.adapters import trees
from tests.inference.conftest import oblique_volume
from volseg.engine.predict import predict_cases
from volseg.inference.inputs import find_inputs, is_label, read_case
from volseg.io import Volume, write_volume


def _volume(shape=(12, 12, 6), seed: int = 0) -> Volume:
    return oblique_volume(shape, seed, (0.9, 1.2, 2.5))


def write_dicom_series(folder: Path, array: np.ndarray, spacing=(0.8, 0.7, 2.5),
                       origin=(-20.0, 10.0, 100.0)) -> None:
    """One CT slice file per z, with the tags GDCM needs to group and order a series.

    ``array`` is ``(x, y, z)`` int16; direction is the identity.
    """
    folder.mkdir(parents=True)
    # GDCM's DICOM writer switches the process locale to "C", which would make later
    # subprocess output decode as ASCII; put it back afterwards.
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(folder, array, spacing, origin)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(folder: Path, array: np.ndarray, spacing, origin) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the series UID set below
    for z in range(array.shape[2]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, z].T))
        position = (origin[0], origin[1], origin[2] + z * spacing[2])
        tags = {
            "0008|0060": "CT",
            "0010|0010": "Test^Patient",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]:.4f}\\{spacing[0]:.4f}",  # row spacing (y), column (x)
            "0018|0050": f"{spacing[2]:.4f}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        image.SetSpacing(spacing[:2])
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_folder_is_one_case_with_its_geometry(tmp_path):
    array = np.random.default_rng(1).integers(-500, 500, (10, 9, 5)).astype(np.int16)
    write_dicom_series(tmp_path / "ct01", array)
    cases = find_inputs(tmp_path / "ct01")
    assert [(c.case_id, len(c.paths)) for c in cases] == [("ct01", 1)]
    volume = read_case(cases[0])
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(volume.origin, (-20.0, 10.0, 100.0), atol=1e-4)


def test_folder_with_dicom_subfolder_list_file_and_channels(checkpoint, tmp_path):
    array = np.random.default_rng(2).integers(-500, 500, (12, 12, 6)).astype(np.int16)
    write_dicom_series(tmp_path / "in" / "ct02", array)
    write_volume(_volume(), tmp_path / "in" / "mr_0000.nrrd")
    write_volume(_volume(seed=1), tmp_path / "in" / "mr_0001.nrrd")
    cases = find_inputs(tmp_path / "in")
    assert [(c.case_id, len(c.paths)) for c in cases] == [("ct02", 1), ("mr", 2)]
    assert read_case(cases[1]).array.shape == (2, 12, 12, 6)

    summary = predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    assert [c for c, _ in summary["failed"]] == ["mr"]  # two channels, the model takes one
    written = nib.load(tmp_path / "out" / "ct02.nii.gz")
    assert written.shape == (12, 12, 6)
    # The label map sits where SimpleITK puts the DICOM series (LPS -> nibabel's RAS affine).
    origin = np.array([20.0, -10.0, 100.0])
    np.testing.assert_allclose(written.affine[:3, 3], origin, atol=1e-3)

    listing = tmp_path / "cases.txt"
    source = write_volume(_volume(), tmp_path / "elsewhere" / "a.mha")
    listing.write_text(f"# cases\n{source}\n\nin/ct02\n")
    cases = find_inputs(listing)
    assert [c.case_id for c in cases] == ["a", "ct02"]
    summary = predict_cases(checkpoint, listing, tmp_path / "listed", device="cpu")
    assert summary["failed"] == []
    assert sorted(p.name for p in (tmp_path / "listed").iterdir()) == ["a.nii.gz", "ct02.nii.gz"]


def test_2d_image_fails_alone_with_a_clear_message(checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)),
                    str(tmp_path / "in" / "flat.nii.gz"))
    write_volume(_volume(), tmp_path / "in" / "good.nii.gz")
    summary = predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    failed = dict(summary["failed"])
    assert list(failed) == ["flat"]
    assert "expected a 3D scalar image, got 2D" in failed["flat"]
    assert [Path(p).name for p in summary["written"]] == ["good.nii.gz"]


# --- dataset trees ------------------------------------------------------------------------------


def test_a_kits23_tree_gives_one_case_per_case_folder_and_never_a_label(tmp_path):
    tree = tmp_path / "kits23"
    ids = trees.make_kits23(tree, cases=3)
    for source in (tree, tree / "dataset"):
        cases = find_inputs(source)
        assert [c.case_id for c in cases] == ids
        assert all([p.name for p in c.paths] == ["imaging.nii.gz"] for c in cases)
    # One case folder: named after the folder, its segmentation left alone.
    (case,) = find_inputs(tree / "dataset" / "case_00001")
    assert (case.case_id, [p.name for p in case.paths]) == ("case_00001", ["imaging.nii.gz"])
    # A list of the imaging files: one case each, named after its folder (not one "imaging").
    listing = tmp_path / "cases.txt"
    listing.write_text("\n".join(str(tree / "dataset" / i / "imaging.nii.gz") for i in ids))
    assert [c.case_id for c in find_inputs(listing)] == ids
    with pytest.raises(ValueError, match="segmentation.nii.gz: a label file, not an image"):
        find_inputs(tree / "dataset" / "case_00000" / "segmentation.nii.gz")


@pytest.mark.parametrize("layout", ["luna16", "hipmri", "nnunet", "nifti_folder"])
def test_each_layouts_tree_lists_the_adapters_cases_without_labels(layout, tmp_path):
    ids = getattr(trees, f"make_{layout}")(tmp_path / layout)
    cases = find_inputs(tmp_path / layout)
    assert sorted(c.case_id for c in cases) == sorted(ids)
    files = [p for c in cases for p in c.paths]
    assert not any(is_label(p) or "label" in str(p.parent).lower() for p in files)


def test_case_folders_of_channel_files_are_one_case_each(tmp_path):
    volume = _volume()
    for case in ("BraTS-001", "BraTS-002"):  # BraTS: every file named after its folder
        for suffix in ("t2w", "t1c", "seg"):
            write_volume(volume, tmp_path / "brats" / case / f"{case}-{suffix}.nii.gz")
    for case in ("p1", "p2"):  # generic: the same channel names in every case folder
        for channel in ("t1", "t2"):
            write_volume(volume, tmp_path / "mixed" / case / f"{channel}.nii.gz")
    brats = find_inputs(tmp_path / "brats")
    assert [c.case_id for c in brats] == ["BraTS-001", "BraTS-002"]
    assert [p.name for p in brats[0].paths] == ["BraTS-001-t1c.nii.gz", "BraTS-001-t2w.nii.gz"]
    assert read_case(brats[0]).array.shape == (2, *volume.array.shape)
    mixed = find_inputs(tmp_path / "mixed")
    assert [(c.case_id, [p.name for p in c.paths]) for c in mixed] == [
        ("p1", ["t1.nii.gz", "t2.nii.gz"]), ("p2", ["t1.nii.gz", "t2.nii.gz"])]


def test_two_cases_named_alike_are_refused_naming_both(tmp_path):
    write_volume(_volume(), tmp_path / "in" / "x.nii.gz")
    write_volume(_volume(), tmp_path / "in" / "X" / "scan.nii.gz")  # case folder "X"
    with pytest.raises(ValueError) as raised:
        find_inputs(tmp_path / "in")
    message = str(raised.value)
    assert "both be written as" in message
    assert str(tmp_path / "in" / "x.nii.gz") in message
    assert str(tmp_path / "in" / "X" / "scan.nii.gz") in message


def test_a_folder_without_images_says_what_it_looked_for(tmp_path):
    trees.make_kits23(tmp_path / "kits23", cases=1)
    (tmp_path / "kits23" / "dataset" / "case_00000" / "imaging.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"kits23: no images: volume files .*\(label "
                                                r"files are skipped\)"):
        find_inputs(tmp_path / "kits23")
