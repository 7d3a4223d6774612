"""Fixtures for training end to end on a tiny dataset fabricated in a real layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

import volseg
from tests.conftest import FAST, compose_config

# FAST minus what belongs to the synthetic dataset (its generator's arguments) or to its
# volume size (a fabricated dataset's volumes are a few dozen voxels a side), and one epoch:
# a few steps prove the wiring.
LAYOUT_FAST = [
    *(o for o in FAST if not o.startswith(("data.layout.", "data.patch_size",
                                            "module.inference.tile_size", "trainer.max_epochs"))),
    "data.patch_size=[16,16,16]",
    "module.inference.tile_size=[16,16,16]",
    "trainer.max_epochs=1",
]


@pytest.fixture
def train_layout(tmp_path: Path) -> Callable[..., tuple[DictConfig, dict]]:
    """``train_layout(name, *overrides)``: a short real run of ``data=<name>`` on the data
    fabricated under ``tmp_path / "data" / name``; returns the config and ``metrics.json``."""

    def run(name: str, *overrides: str) -> tuple[DictConfig, dict]:
        cfg = compose_config("train", tmp_path, [f"data={name}", *LAYOUT_FAST, *overrides])
        volseg.train(cfg)
        return cfg, json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())

    return run
