import json

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from tests.conftest import compose_config
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


def test_config_reads_nnunet_v2_dataset_json_and_command_line_wins(tmp_path):
    root = tmp_path / "Dataset002_Heart"
    _dataset(root, channels=("T1", "T2", "FLAIR"),
             labels={"background": 0, "edema": 1, "enhancing": 2})
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}"])
    assert (cfg.data.in_channels, cfg.data.num_classes) == (3, 3)
    assert list(cfg.data.class_names) == ["background", "edema", "enhancing"]
    assert (cfg.model.in_channels, cfg.model.out_channels) == (3, 3)
    assert list(cfg.module.class_names) == ["background", "edema", "enhancing"]
    assert [c.case_id for c in instantiate(cfg.data).cases()] == ["a", "b"]

    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}",
                                             "data.num_classes=2", "data.class_names=[bg,fg]"])
    assert (cfg.data.num_classes, cfg.model.out_channels) == (2, 2)
    assert list(cfg.module.class_names) == ["bg", "fg"]
    assert cfg.data.in_channels == 3  # not overridden: still the file's


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_config_without_a_readable_dataset_json_is_one_line_naming_it(tmp_path, content):
    root = tmp_path / "task"
    root.mkdir()
    if content is not None:
        (root / "dataset.json").write_text(content)
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}"])
    for key in ("num_classes", "in_channels", "class_names"):
        with pytest.raises(InterpolationResolutionError) as caught:
            OmegaConf.select(cfg, f"data.{key}")
        message = str(caught.value)
        assert "\n" not in message and "raised while resolving" not in message
        assert message.startswith(f"{root / 'dataset.json'}: ")
        assert "set data.root=<task folder>" in message


def test_config_from_dataset_json_without_labels_or_channels_says_what_to_set(tmp_path):
    root = tmp_path / "task"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "no labels, no channels"}))
    cfg = compose_config("train", tmp_path, ["data=decathlon", f"data.root={root}"])
    with pytest.raises(InterpolationResolutionError, match="no labels; set data.class_names"):
        _ = cfg.data.num_classes
    with pytest.raises(InterpolationResolutionError, match="no channel_names .*data.in_channels"):
        _ = cfg.data.in_channels
