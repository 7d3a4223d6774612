"""Shared fixtures: the real Hydra config, composed with every output under tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import volseg.runs.compose
from volseg.runs.compose import builtin_config_dir

# pytest-xdist's workers share the machine's cores: each worker, and each process a test starts
# (documented commands, DDP ranks, sweep jobs), gets its share. More intra-op threads than cores
# spin against each other: two 2-thread training runs side by side on 2 cores took 26 s, and
# 16 s with one thread each.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # read by every child process's torch

CONF_DIR = builtin_config_dir()  # volseg's own configs, where the installed package has them

# A run small enough for the test suite: a narrow net, small patches, a few steps.
FAST = [
    "model.features=4",
    "model.num_levels=3",
    "data.layout.num_cases=6",
    "data.layout.size_mm=[96,96,64]",
    "data.patch_size=[32,32,16]",
    "module.inference.tile_size=[48,48,28]",
    "data.samples_per_epoch=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_config(
    name: str, tmp_path: Path, overrides: Sequence[str] = (), data_dir: Path | None = None
) -> DictConfig:
    """Compose ``<name>.yaml`` as the CLI would, with outputs and data under tmp_path."""
    data_dir = data_dir or tmp_path / "data"
    cfg = volseg.runs.compose.compose_config(
        [f"paths.root_dir={tmp_path}", f"paths.data_dir={data_dir}", *overrides], name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the session: the small synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint as `volseg train` writes it (`make_checkpoint`)."""
    from tests.inference.conftest import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


@pytest.fixture
def train_config(tmp_path: Path, shared_data_dir: Path) -> Callable[..., DictConfig]:
    """``train_config(*overrides)``: the fast training config on the shared synthetic data."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", tmp_path, [*FAST, *overrides], data_dir=shared_data_dir)

    return make


@pytest.fixture(autouse=True)
def _small_thread_pool() -> None:
    torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The documentation's commands first: each of its two files runs one command after another
    # in one worker (pytest-xdist hands out whole files, `--dist loadfile`), the longest chains
    # of the suite, so they start at once and the other files fill in around them.
    # test_docs_data_inference.py is the other reading path, as long: it goes second, so that
    # the second worker starts on it rather than reach it late and finish alone.
    first = ["test_docs.py", "test_docs_data_inference.py"]
    items.sort(key=lambda item: first.index(item.path.name) if item.path.name in first
               else len(first))  # stable: order kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
