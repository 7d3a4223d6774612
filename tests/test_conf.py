"""Every config option composes and builds; mistakes fail with Hydra's clear errors."""

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONF_DIR, compose_config

GROUPS = ["data", "model", "loss", "optimizer", "scheduler", "trainer", "callbacks", "logger",
          "debug", "experiment", "paths", "hydra"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
# Trainers that need hardware this machine may not have are composed, not built.
NEEDS_GPU = {("trainer", "gpu"), ("trainer", "ddp")}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    override = [] if group in ("hydra",) else [f"{group}={option}"]
    cfg = compose_config("train", tmp_path, override)
    node = cfg.get(group) if group != "debug" else None
    if group == "model":  # forward/backward of every model: tests/models/test_all_models.py
        assert isinstance(instantiate(cfg.model), torch.nn.Module)
    elif group == "loss":
        loss = instantiate(cfg.loss)
        value = loss(torch.randn(1, 3, 4, 4, 4), torch.randint(0, 3, (1, 4, 4, 4)))
        assert torch.isfinite(value)
    elif group == "optimizer":
        assert isinstance(instantiate(node)(params=[torch.nn.Parameter(torch.zeros(1))]),
                          torch.optim.Optimizer)
    elif group == "scheduler" and node:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        instantiate(node)(optimizer=optimizer)
    elif group in ("callbacks", "logger"):
        for item in (node or {}).values():
            assert instantiate(item) is not None
    elif group == "trainer" and (group, option) not in NEEDS_GPU:
        assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs


def test_model_channels_follow_the_data(tmp_path):
    cfg = compose_config("train", tmp_path, ["data.in_channels=2", "data.num_classes=5",
                                             "data.class_names=[a,b,c,d,e]"])
    assert (cfg.model.in_channels, cfg.model.out_channels) == (2, 5)
    assert cfg.module.net.out_channels == 5


def test_misspelled_key_fails_naming_it(tmp_path):
    with pytest.raises(ConfigCompositionException, match="data.bach_size"):
        compose_config("train", tmp_path, ["data.bach_size=4"])


def test_unknown_option_fails_naming_it(tmp_path):
    with pytest.raises(MissingConfigException, match="unet4d"):
        compose_config("train", tmp_path, ["model=unet4d"])


def test_run_dir_is_unique_per_process(tmp_path):
    cfg = compose_config("train", tmp_path)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == tmp_path / "outputs" / "train" / "runs"
    assert run_dir.name.endswith(f"_{os.getpid()}")
    assert Path(cfg.hydra.sweep.dir).parent == tmp_path / "outputs" / "train" / "multiruns"


def test_public_keys_exist(tmp_path):
    cfg = compose_config("train", tmp_path)
    for key in ("seed", "task_name", "tags", "train", "test", "ckpt_path", "optimized_metric"):
        assert key in cfg
    for key in ("root", "num_classes", "in_channels", "class_names", "patch_size", "batch_size",
                "num_workers", "spacing"):
        assert key in cfg.data


def test_predict_config_composes(tmp_path):
    cfg = compose_config("predict", tmp_path, ["ckpt_path=a.ckpt", "input=in", "output=out"])
    assert (cfg.ckpt_path, cfg.input, cfg.output, cfg.device) == ("a.ckpt", "in", "out", "auto")


# --- each setting written once ------------------------------------------------------------------

DATA_OPTIONS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem != "base")


def _inherited(name: str) -> DictConfig:
    """What ``data/<name>.yaml`` would be with nothing of its own: its defaults chain merged,
    interpolations kept."""
    own = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
    parents = [entry for entry in own.get("defaults", []) if entry != "_self_"]
    assert len(parents) == 1, f"data/{name}.yaml extends {parents}, expected one config"
    parent = OmegaConf.load(CONF_DIR / "data" / f"{parents[0]}.yaml")
    if parents[0] == "base":
        return parent
    return OmegaConf.merge(_inherited(parents[0]), parent)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    return {key: value for name, child in node.items()
            for key, value in _leaves(child, f"{prefix}.{name}" if prefix else name).items()}


@pytest.mark.parametrize("name", DATA_OPTIONS)
def test_a_data_config_writes_only_what_differs_from_the_config_it_extends(name):
    own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml"))
    inherited = _leaves(OmegaConf.to_container(_inherited(name)))
    own.pop("defaults")
    restated = {key: value for key, value in _leaves(own).items()
                if key in inherited and inherited[key] == value}
    assert restated == {}, f"data/{name}.yaml restates what it extends"


@pytest.mark.parametrize("name", [*DATA_OPTIONS, "base"])
def test_a_data_config_sets_only_data(name):
    """Model and inference settings belong to the module and experiment configs: a data
    config that set them would change every run on that data behind the user's back."""
    own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml"))
    assert set(own) - {"defaults"} == {"data"}


def test_regions_are_the_data_configs(tmp_path):
    cfg = compose_config("train", tmp_path, ["data=kits23"])
    regions = {"kidney_and_masses": [1, 2], "tumor": [2]}
    assert OmegaConf.to_container(cfg.module.regions) == regions
    assert OmegaConf.to_container(cfg.data.regions) == regions
    evaluation = compose_config("evaluate", tmp_path, ["data=kits23", "pred=p"])
    assert OmegaConf.to_container(evaluation.regions) == regions


@pytest.mark.parametrize("name", DATA_OPTIONS)
def test_every_data_option_has_every_setting_of_the_base(name, tmp_path):
    base = set(_leaves(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "base.yaml"))))
    cfg = compose_config("train", tmp_path, [f"data={name}"])
    composed = set(_leaves({"data": OmegaConf.to_container(cfg.data)}))
    # A setting null in the base may be a mapping in a dataset's (KiTS23's regions).
    missing = {key for key in base
               if not any(c == key or c.startswith(f"{key}.") for c in composed)}
    assert missing == set()


def test_num_classes_is_the_number_of_class_names(tmp_path):
    cfg = compose_config("train", tmp_path, ["data=kits23", "data.layout.drop_cyst=false",
                                             "data.class_names=[background,kidney,tumor,cyst]"])
    assert (cfg.data.num_classes, cfg.model.out_channels) == (4, 4)


@pytest.mark.parametrize("loss", sorted(p.stem for p in (CONF_DIR / "loss").glob("*.yaml")))
def test_every_loss_ignores_the_label_the_data_marks_unannotated(loss, tmp_path):
    cfg = compose_config("train", tmp_path, [f"loss={loss}", "data.ignore_index=7"])
    built = instantiate(cfg.loss)
    values = {part.ignore_index for part in built.modules() if hasattr(part, "ignore_index")}
    assert values == {7}
