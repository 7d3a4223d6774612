"""Every dataset config composes, and agrees with what its adapter says about the data."""

import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config

# Options of conf/data/ with an adapter of their own and settings taken from a replicated paper.
LAYOUTS = ["luna16", "kits23", "hipmri", "nifti_folder"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_config_matches_its_adapter(tmp_path, name):
    cfg = compose_config("train", tmp_path, [f"data={name}"])
    assert cfg.data.root == str(tmp_path / "data" / name)
    assert len(cfg.data.class_names) == cfg.data.num_classes
    assert len(cfg.data.patch_size) == 3 and cfg.data.split.val > 0
    dm = instantiate(cfg.data)  # adapters touch no file until asked for cases
    if dm.layout.class_names is not None:
        assert dm.layout.class_names == list(cfg.data.class_names)
    if dm.layout.channel_names is not None:
        assert len(dm.layout.channel_names) == cfg.data.in_channels


@pytest.mark.parametrize("drop_cyst", [True, False])
def test_kits23_regions_name_existing_labels(tmp_path, drop_cyst):
    """The regions of kits23.yaml, and those its comment gives for drop_cyst=false."""
    overrides = ["data=kits23"]
    if not drop_cyst:
        overrides += ["data.layout.drop_cyst=false", "data.num_classes=4",
                      "data.class_names=[background,kidney,tumor,cyst]",
                      "~data.regions",
                      "+data.regions={kidney_and_masses:[1,2,3],masses:[2,3],tumor:[2]}"]
    cfg = compose_config("train", tmp_path, overrides)
    dm = instantiate(cfg.data)
    assert dm.layout.class_names == list(cfg.data.class_names)
    values = {v for labels in cfg.module.regions.values() for v in labels}
    assert values == set(range(1, cfg.data.num_classes))  # every foreground label, no other
    assert ("masses" in cfg.module.regions) == (not drop_cyst)
