import pytest
import torch
from hydra.utils import instantiate


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
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0  # CT window to [0, 1]
    volume = next(iter(datamodule.test_dataloader()))
    assert volume["image"].ndim == 5 and volume["original_label"].ndim == 4
    assert list(volume["original_label"].shape[1:]) == volume["meta"]["original"]["shape"]


def test_class_names_must_match_num_classes(train_config):
    with pytest.raises(Exception, match="data.class_names has 2 names but data.num_classes=3"):
        instantiate(train_config("data.class_names=[a,b]").data)


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
