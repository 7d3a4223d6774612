"""A plain images/ + labels/ folder, 3D or 4D multi-channel NIfTI, paired by file name."""

import nibabel as nib
import numpy as np
import pytest

from volseg.data.adapters.nifti_folder import NiftiFolderLayout
from volseg.io import VolumeReadError

AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -12.0], [0, 0, 4.0, 7.0], [0, 0, 0, 1]])


def write_pair(root, name, channels=2, ending=".nii.gz", label=True):
    """A (x, y, z, C) image, as the 2-channel pipeline stores it, and its label."""
    rng = np.random.default_rng(len(name))
    data = rng.normal(size=(6, 5, 4, channels)).astype(np.float32)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), root / "images" / f"{name}{ending}")
    if label:
        labels = rng.integers(0, 5, size=(6, 5, 4)).astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, AFFINE), root / "labels" / f"{name}{ending}")
    return data


def test_four_d_images_read_channel_first_on_the_label_grid(tmp_path):
    data = write_pair(tmp_path, "b")
    write_pair(tmp_path, "a", ending=".nii")
    layout = NiftiFolderLayout(tmp_path, channels=2)
    cases = layout.list_cases()
    assert [c.case_id for c in cases] == ["a", "b"]
    image, label = layout.read_image(cases[1]), layout.read_label(cases[1])
    assert image.array.shape == (2, 6, 5, 4)
    np.testing.assert_array_equal(image.array, data.transpose(3, 0, 1, 2))
    assert image.geometry_mismatch(label) is None
    assert image.spacing == (1.5, 1.5, 4.0)


def test_unmatched_files_are_listed(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b", label=False)
    write_pair(tmp_path, "c", label=False)
    (tmp_path / "images" / "notes.txt").write_text("not an image")  # ignored
    with pytest.raises(ValueError, match=r"no label for .*images/b.nii.gz, .*images/c.nii.gz"):
        NiftiFolderLayout(tmp_path).list_cases()


def test_wrong_channel_count_and_duplicates_are_named(tmp_path):
    write_pair(tmp_path, "a", channels=3)
    layout = NiftiFolderLayout(tmp_path, channels=2)
    (case,) = layout.list_cases()
    with pytest.raises(VolumeReadError, match=r"images/a.nii.gz: 3 channel\(s\), expected 2"):
        layout.read_image(case)
    write_pair(tmp_path, "a", ending=".nii")  # a.nii beside a.nii.gz: which one is "a"?
    with pytest.raises(ValueError, match="same case name 'a'"):
        layout.list_cases()
    with pytest.raises(FileNotFoundError, match="images: missing folder"):
        NiftiFolderLayout(tmp_path / "none").list_cases()
