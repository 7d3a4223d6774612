"""The original Medical Segmentation Decathlon layout (4D images, a `training` list), nnU-Net v1."""

import json

import nibabel as nib
import numpy as np
import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config
from volseg.data.adapters.decathlon import DecathlonLayout, class_names_from_labels
from volseg.io import VolumeReadError

MODALITIES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
AFFINE = np.array([[-1.0, 0, 0, 90.0], [0, -1.2, 0, 126.0], [0, 0, 1.5, -72.0], [0, 0, 0, 1]])


def write_msd(root, cases=("BRATS_001", "BRATS_002"), channels=4, per_channel=False):
    """A BraTS-like Decathlon task; ``per_channel`` stores images as nnU-Net v1 does."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    meta = {"name": "BRATS", "modality": MODALITIES, "labels": LABELS,
            "numTraining": len(cases), "test": [],
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                         for c in cases]}
    (root / "dataset.json").write_text(json.dumps(meta))
    images = {}
    for i, case in enumerate(cases):
        data = np.random.default_rng(i).normal(size=(6, 5, 4, channels)).astype(np.float32)
        images[case] = data
        if per_channel:
            for c in range(channels):
                nib.save(nib.Nifti1Image(data[..., c], AFFINE),
                         root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        else:
            nib.save(nib.Nifti1Image(data, AFFINE), root / "imagesTr" / f"{case}.nii.gz")
            # The Decathlon tarballs carry macOS resource forks beside every image.
            (root / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07")
        label = (np.arange(6 * 5 * 4).reshape(6, 5, 4) % 4).astype(np.uint8)
        nib.save(nib.Nifti1Image(label, AFFINE), root / "labelsTr" / f"{case}.nii.gz")
    return images


def test_four_d_images_listed_in_dataset_json(tmp_path):
    images = write_msd(tmp_path)
    layout = DecathlonLayout(tmp_path)
    cases = layout.list_cases()
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]
    assert [p.name for p in cases[0].image_paths] == ["BRATS_001.nii.gz"]
    assert layout.class_names == ["background", "edema", "non-enhancing tumor", "enhancing tumour"]
    assert layout.channel_names == ["FLAIR", "T1w", "t1gd", "T2w"]
    image, label = layout.read_image(cases[1]), layout.read_label(cases[1])
    assert image.array.shape == (4, 6, 5, 4)
    np.testing.assert_array_equal(image.array, images["BRATS_002"].transpose(3, 0, 1, 2))
    assert image.geometry_mismatch(label) is None


def test_channel_count_must_match_modalities(tmp_path):
    write_msd(tmp_path, channels=3)
    layout = DecathlonLayout(tmp_path)
    with pytest.raises(VolumeReadError, match=r"BRATS_001.nii.gz: 3 channel\(s\), expected 4"):
        layout.read_image(layout.list_cases()[0])


def test_nnunet_v1_per_channel_files(tmp_path):
    images = write_msd(tmp_path, per_channel=True)
    layout = DecathlonLayout(tmp_path)
    case = layout.list_cases()[0]
    assert [p.name for p in case.image_paths] == [f"BRATS_001_{c:04d}.nii.gz" for c in range(4)]
    np.testing.assert_array_equal(layout.read_image(case).array,
                                  images["BRATS_001"].transpose(3, 0, 1, 2))
    (tmp_path / "imagesTr" / "BRATS_002_0002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="BRATS_002_0002.nii.gz: missing channel"):
        layout.list_cases()


def test_missing_files_in_training_list_are_named(tmp_path):
    write_msd(tmp_path)
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="BRATS_002.nii.gz: missing label"):
        DecathlonLayout(tmp_path).list_cases()
    (tmp_path / "imagesTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"imagesTr/BRATS_001.nii.gz: missing \(nor"):
        DecathlonLayout(tmp_path).list_cases()


def test_labels_either_way_round(tmp_path):
    path = tmp_path / "dataset.json"
    msd = class_names_from_labels({"1": "edema", "0": "background"}, path)
    v2 = class_names_from_labels({"edema": 1, "background": 0}, path)
    assert msd == v2 == ["background", "edema"]
    with pytest.raises(ValueError, match="region-based"):
        class_names_from_labels({"background": 0, "whole": [1, 2]}, path)
    with pytest.raises(ValueError, match="labels must map values to names"):
        class_names_from_labels({"a": "background"}, path)
    with pytest.raises(ValueError, match=r"labels must be 0..K-1, got \[0, 2\]"):
        class_names_from_labels({"0": "background", "2": "edema"}, path)


def test_config_reads_dataset_json_and_command_line_wins(tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    write_msd(root)
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}"])
    names = ["background", "edema", "non-enhancing tumor", "enhancing tumour"]
    assert (cfg.data.in_channels, cfg.data.num_classes) == (4, 4)
    assert list(cfg.data.class_names) == names
    # What the model and the module are built with: the interpolations see the same values.
    assert (cfg.model.in_channels, cfg.model.out_channels) == (4, 4)
    assert list(cfg.module.class_names) == names
    dm = instantiate(cfg.data)
    image, label = dm.load_case("BRATS_001")
    assert image.array.shape == (4, 6, 5, 4) and label.spatial_shape == (6, 5, 4)

    short = "data.class_names=[bg,ed,ne,en]"
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}", short])
    assert list(cfg.data.class_names) == list(cfg.module.class_names) == ["bg", "ed", "ne", "en"]
    # An override that disagrees with dataset.json is still refused by the data module.
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}",
                                             "data.in_channels=2"])
    assert cfg.model.in_channels == 2
    with pytest.raises(ValueError, match="data.in_channels=2 but .* has 4 channels"):
        instantiate(cfg.data).cases()
