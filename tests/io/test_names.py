"""Volume file names: one rule for predict's inputs, the dataset layouts and evaluate."""

from pathlib import Path

import pytest

from volseg.evaluation import evaluate
from volseg.io.names import files_by_name, strip_ending, volume_files, volume_stem


@pytest.mark.parametrize(("name", "stem"), [
    ("case_1.nii.gz", "case_1"), ("case_1.nii", "case_1"), ("CT.NII.GZ", "CT"),
    ("lung.mhd", "lung"), ("a.b.nrrd", "a.b"), ("case.raw", None), (".nii.gz", None),
    ("notes.txt", None),
])
def test_a_volume_stem(name, stem):
    assert volume_stem(Path(name)) == stem


def test_nifti_endings_by_default():
    assert strip_ending("x.nii.gz") == "x" and strip_ending("x.mha") is None


def test_two_files_of_one_case_are_refused_by_name(tmp_path):
    for name in ("a.nii.gz", "a.nii", "b.mha", ".hidden.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"a\.nii(\.gz)?: same case name 'a' as a\.nii"):
        volume_files(tmp_path)
    (tmp_path / "a.nii").unlink()
    assert volume_files(tmp_path) == {"a": tmp_path / "a.nii.gz", "b": tmp_path / "b.mha"}
    assert files_by_name(tmp_path) == {"a": tmp_path / "a.nii.gz"}  # NIfTI only


def test_evaluate_refuses_a_prediction_folder_with_two_files_for_one_case(tmp_path):
    """Before, the second file silently replaced the first as the case's prediction."""
    (tmp_path / "pred").mkdir()
    for name in ("a.nii.gz", "a.mha"):
        (tmp_path / "pred" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="same case name 'a'"):
        evaluate(tmp_path / "pred", tmp_path, tmp_path / "out")
