import json

import numpy as np
import pytest

from volseg.data.adapters.decathlon import DecathlonLayout
from volseg.io import Volume, write_volume


def _dataset(root, cases=("a", "b"), channels=("T1", "T2"), labels=None):
    labels = labels or {"background": 0, "tumour": 1}
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels,
            "numTraining": len(cases), "file_ending": ".nii.gz"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in cases:
        for i in range(len(channels)):
            write_volume(Volume(np.zeros((4, 4, 3), np.float32), (1, 1, 2)),
                         root / "imagesTr" / f"{case}_{i:04d}.nii.gz")
        write_volume(Volume(np.zeros((4, 4, 3), np.uint8), (1, 1, 2)),
                     root / "labelsTr" / f"{case}.nii.gz")


def test_lists_multichannel_cases_with_names(tmp_path):
    _dataset(tmp_path)
    layout = DecathlonLayout(tmp_path)
    cases = layout.list_cases()
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].image_paths] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    assert layout.class_names == ["background", "tumour"]
    assert layout.channel_names == ["T1", "T2"]
    assert layout.read_image(cases[0]).array.shape == (2, 4, 4, 3)


def test_missing_label_and_channel_are_named(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="b.nii.gz: missing label for case b"):
        DecathlonLayout(tmp_path).list_cases()
    _dataset(tmp_path)
    (tmp_path / "imagesTr" / "a_0001.nii.gz").unlink()
    with pytest.raises(ValueError, match="case a has channels \\[0\\]"):
        DecathlonLayout(tmp_path).list_cases()


def test_missing_dataset_json_and_gappy_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json: missing"):
        DecathlonLayout(tmp_path).list_cases()
    _dataset(tmp_path, labels={"background": 0, "tumour": 2})
    with pytest.raises(ValueError, match="labels must be 0..K-1"):
        _ = DecathlonLayout(tmp_path).class_names
