"""The one prediction writer: files named after the case, complete or absent, never replaced."""

import nibabel as nib
import numpy as np
import pytest

from tests.inference.conftest import oblique_volume
from volseg.inference.writer import Prediction, refuse_existing_outputs, write_prediction
from volseg.io import read_volume
from volseg.io.safe_names import UnsafeNameError


def _prediction(with_maps: bool) -> Prediction:
    image = oblique_volume((6, 5, 4))
    labels = image.with_array((image.array > 0).astype(np.uint8))
    probabilities = image.with_array(np.stack([1 - labels.array, labels.array]).astype(
        np.float32)) if with_maps else None
    uncertainty = image.with_array(np.full((6, 5, 4), 0.5, np.float32)) if with_maps else None
    return Prediction(labels, probabilities, uncertainty)


def test_labels_probabilities_and_uncertainty_on_the_case_grid(tmp_path):
    prediction = _prediction(with_maps=True)
    path = write_prediction(prediction, tmp_path, "case_7", save_probabilities=True)
    assert path == tmp_path / "case_7.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "case_7.nii.gz", "case_7_probabilities.nii.gz", "case_7_uncertainty.nii.gz"]
    back = read_volume(path)
    assert back.geometry_mismatch(prediction.labels) is None
    np.testing.assert_array_equal(back.array, prediction.labels.array)
    maps = nib.load(tmp_path / "case_7_probabilities.nii.gz")
    assert maps.shape == (6, 5, 4, 2)


def test_probabilities_only_when_asked(tmp_path):
    write_prediction(_prediction(with_maps=True), tmp_path, "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nii.gz", "c_uncertainty.nii.gz"]


def test_an_unsafe_case_id_writes_nothing(tmp_path):
    with pytest.raises(UnsafeNameError, match=r"'\.\./x'"):
        write_prediction(_prediction(with_maps=True), tmp_path / "out", "../x",
                         save_probabilities=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.nii.gz").exists()


def test_existing_outputs_are_refused_by_name(tmp_path):
    write_prediction(_prediction(with_maps=False), tmp_path, "a")
    refuse_existing_outputs(["b"], tmp_path)  # nothing of b's there
    with pytest.raises(ValueError, match=r"a\.nii\.gz: set overwrite=true"):
        refuse_existing_outputs(["a", "b"], tmp_path)
