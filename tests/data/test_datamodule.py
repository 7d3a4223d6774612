import json
import logging

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, FAST, compose_config
from volseg.data.case_checks import BadCasesError
from volseg.io import read_volume, write_volume


@pytest.fixture
def datamodule(train_config):
    dm = instantiate(train_config().data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_cases_and_load_case_in_original_geometry(datamodule):
    cases = datamodule.cases()
    assert len(cases) == 6
    image, label = datamodule.load_case(cases[0].case_id)
    assert image.array.shape[0] == 1 and image.spatial_shape == label.spatial_shape
    assert image.spacing[2] > image.spacing[0]  # anisotropic, as generated
    assert image.geometry_mismatch(label) is None


def test_split_covers_every_case_once(datamodule):
    split = datamodule.split
    assert sorted(sum(split.values(), [])) == sorted(c.case_id for c in datamodule.cases())
    assert all(split[name] for name in ("train", "val", "test"))


def test_loaders_give_patches_and_whole_volumes(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 32, 32, 16) and batch["label"].dtype == torch.int64
    volume = next(iter(datamodule.test_dataloader()))
    # CT window to [0, 1]; checked on whole volumes: intensity augmentation (noise, gamma with
    # restored statistics) may leave that range in training patches, as in nnU-Net.
    assert volume["image"].min() >= 0.0 and volume["image"].max() <= 1.0
    assert volume["image"].ndim == 5 and volume["original_label"].ndim == 4
    assert list(volume["original_label"].shape[1:]) == volume["meta"]["original"]["shape"]


def test_a_split_setting_left_out_is_named(train_config):
    """The split's values are written once, in conf/data/base.yaml: no default in code hides
    a config that lost one."""
    with pytest.raises(Exception, match=r"data.split is missing \['folds'\]"):
        instantiate(train_config("~data.split.folds").data)


def test_num_classes_follows_the_class_names_and_an_override_must_agree(train_config):
    assert instantiate(train_config("data.class_names=[a,b]").data).num_classes == 2
    with pytest.raises(Exception, match="data.class_names has 2 names but data.num_classes=3"):
        instantiate(train_config("data.class_names=[a,b]", "data.num_classes=3").data)


def test_num_classes_checked_against_dataset_json(train_config):
    dm = instantiate(train_config("data.num_classes=4", "data.class_names=[a,b,c,d]").data)
    dm.layout.prepare()
    with pytest.raises(ValueError, match="data.num_classes=4 but .* defines 3 classes"):
        dm.cases()


def test_epoch_length_and_worker_processes(train_config):
    dm = instantiate(train_config("data.samples_per_epoch=12", "data.batch_size=3",
                                  "data.num_workers=1").data)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 4 and loader.num_workers == 1
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["image"].shape[0] == 3


def test_fold_jobs_share_the_test_set_and_partition_the_rest(train_config, tmp_path):
    file = f"data.split.file={tmp_path / 'splits.json'}"
    chosen = []
    for fold in (None, 0, 1, 2):
        selected = "data.fold=null" if fold is None else f"data.fold={fold}"
        dm = instantiate(train_config(file, "data.split.folds=3", selected).data)
        dm.prepare_data()
        dm.setup("fit")
        chosen.append(dm.split)
    plain, *folds = chosen
    assert all(split["test"] == plain["test"] for split in folds)
    validation = [split["val"] for split in folds]
    assert sorted(sum(validation, [])) == sorted(plain["train"] + plain["val"])
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["folds"] == validation and saved["settings"]["folds"] == 3


def test_stratified_split_is_recorded(train_config, tmp_path):
    dm = instantiate(train_config(f"data.split.file={tmp_path / 'splits.json'}",
                                  "data.split.stratify=true").data)
    dm.prepare_data()
    dm.setup("fit")
    assert json.loads((tmp_path / "splits.json").read_text())["settings"]["stratify"] is True
    assert all(dm.split[name] for name in ("train", "val", "test"))


@pytest.fixture
def damaged_config(tmp_path):
    """``make(*overrides)``: the fast config on a private synthetic dataset whose case 2 has a
    label value 7 (data.num_classes=3)."""
    data_dir = tmp_path / "own_data"

    def make(*overrides):
        return compose_config("train", tmp_path, [*FAST, *overrides], data_dir=data_dir)

    dm = instantiate(make().data)
    dm.layout.prepare()
    label = dm.cases()[2].label_path
    volume = read_volume(label)
    volume.array[0, 0, 0] = 7
    write_volume(volume, label)
    return make


def test_bad_case_refuses_training_or_is_skipped(damaged_config, caplog):
    dm = instantiate(damaged_config().data)
    with pytest.raises(BadCasesError, match=r"synth_002.nii.gz: label values \[0, 1, 2, 7\]"):
        dm.prepare_data()
    dm = instantiate(damaged_config("data.skip_bad_cases=true").data)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
        dm.setup("fit")
    assert "leaving out case synth_002" in caplog.text
    assert [c.case_id for c in dm.cases()] == ["synth_000", "synth_001", "synth_003",
                                               "synth_004", "synth_005"]
    assert "synth_002" not in sum(dm.split.values(), [])
    # Another process (a DDP rank) that only runs setup knows the bad case from the cache.
    with pytest.raises(BadCasesError, match="synth_002"):
        instantiate(damaged_config().data).setup("fit")
    rank = instantiate(damaged_config("data.skip_bad_cases=true").data)
    rank.setup("fit")
    assert rank.split == dm.split


def test_the_base_data_config_lists_every_setting():
    """A user overrides any setting without `+`: each key is in conf/data/base.yaml, which every
    data config extends (tests/test_conf.py checks that each one has them all)."""
    import dataclasses
    import inspect

    from omegaconf import OmegaConf

    from volseg.data.datamodule import SegmentationDataModule
    from volseg.data.preprocess import Preprocessor

    data = OmegaConf.load(CONF_DIR / "data" / "base.yaml").data
    arguments = set(inspect.signature(SegmentationDataModule).parameters)
    assert arguments - set(data) == set()
    fields = {f.name for f in dataclasses.fields(Preprocessor)} - {"spacing"}
    assert fields - set(data.preprocessing) == set()
