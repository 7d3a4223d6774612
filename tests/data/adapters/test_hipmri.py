"""HipMRI: MR and label folders paired by name, weekly scans grouped by patient."""

import json

import numpy as np
import pytest

from volseg.data.adapters.hipmri import IMAGES, LABELS, RELEASE, HipMRILayout
from volseg.io import Volume, write_volume


def write_scan(base, name, shape=(8, 8, 4), image=True, label=True):
    """``<base>/semantic_MRs_anon/<name>_LFOV`` and its ``_SEMANTIC_LFOV`` label."""
    volume = Volume(np.zeros(shape, np.float32), (1.2, 1.2, 2.5))
    if image:
        write_volume(volume, base / IMAGES / f"{name}_LFOV.nii.gz")
    if label:
        labels = np.arange(np.prod(shape)).reshape(shape) % 6
        write_volume(volume.with_array(labels.astype(np.uint8)),
                     base / LABELS / f"{name}_SEMANTIC_LFOV.nii.gz")


def test_pairs_scans_and_groups_weeks_by_patient(tmp_path):
    for patient, weeks in (("Case_004", 3), ("Case_010", 1), ("Case_011", 2)):
        for week in range(weeks):
            write_scan(tmp_path, f"{patient}_Week{week}")
    write_scan(tmp_path, "Case_010_Week5", shape=(8, 8, 6))  # another size, as in the release
    layout = HipMRILayout(tmp_path)
    cases = layout.list_cases()
    assert len(cases) == 7
    case = cases[0]
    assert case.case_id == "Case_004_Week0_LFOV" and case.group == "Case_004"
    assert case.label_path.name == "Case_004_Week0_SEMANTIC_LFOV.nii.gz"
    assert {c.group for c in cases} == {"Case_004", "Case_010", "Case_011"}
    odd = next(c for c in cases if c.case_id == "Case_010_Week5_LFOV")
    assert layout.read_image(odd).array.shape == (1, 8, 8, 6)
    assert layout.class_names == ["background", "body", "bone", "bladder", "rectum", "prostate"]


def test_release_folder_is_found(tmp_path):
    write_scan(tmp_path / RELEASE, "Case_001_Week0")
    assert [c.case_id for c in HipMRILayout(tmp_path).list_cases()] == ["Case_001_Week0_LFOV"]


def test_missing_label_or_image_is_named(tmp_path):
    write_scan(tmp_path, "Case_001_Week0")
    write_scan(tmp_path, "Case_001_Week1", label=False)
    write_scan(tmp_path, "Case_002_Week0", image=False)
    with pytest.raises(ValueError, match=r"no label for .*Case_001_Week1_LFOV.nii.gz; "
                                         r"no image for .*Case_002_Week0_SEMANTIC_LFOV.nii.gz"):
        HipMRILayout(tmp_path).list_cases()


def test_unexpected_names_and_missing_folder(tmp_path):
    write_scan(tmp_path, "Patient_1")
    with pytest.raises(ValueError, match="Patient_1_LFOV.nii.gz: expected a Case_XXX_WeekY"):
        HipMRILayout(tmp_path).list_cases()
    with pytest.raises(FileNotFoundError, match="semantic_MRs_anon: missing folder"):
        HipMRILayout(tmp_path / "nowhere").list_cases()


@pytest.mark.slow
def test_trains_end_to_end_keeping_patients_together(tmp_path, train_layout):
    """`data=hipmri`: five scans of four patients, one of another size, in a short real run."""
    root = tmp_path / "data" / "hipmri"
    for name in ("Case_001_Week0", "Case_001_Week1", "Case_002_Week0", "Case_003_Week2"):
        write_scan(root, name, shape=(20, 20, 12))
    write_scan(root, "Case_004_Week0", shape=(20, 20, 14))
    cfg, metrics = train_layout("hipmri")
    assert "test/dice_prostate" in metrics and metrics["epochs"] == cfg.trainer.max_epochs
    split = json.loads((root / "splits.json").read_text())
    weeks = [name for name in ("train", "val", "test") if "Case_001_Week0_LFOV" in split[name]]
    assert weeks and "Case_001_Week1_LFOV" in split[weeks[0]]
