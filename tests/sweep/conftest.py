"""What the sweep tests share: a tiny run, its data prepared once, `volseg train` as typed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import FAST, compose_config

# FAST cut to one training step and one validation volume, without what a sweep test does not
# look at (sanity check, surface metrics, loggers): each job then costs a few seconds.
TINY = [o for o in FAST if not o.startswith(("trainer.max_epochs", "data.samples_per_epoch"))] + [
    "trainer.max_epochs=1",
    "data.samples_per_epoch=2",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "module.surface_metrics=false",
    "logger=none",
    "callbacks.lr_monitor=null",
    "data.cache_workers=0",
]


@pytest.fixture(scope="session")
def data_dir(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY dataset generated, cached and split once, before jobs that may run at once."""
    cfg = compose_config("train", tmp_path_factory.mktemp("prepare"), TINY,
                         data_dir=shared_data_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return shared_data_dir


def train_command(cwd: Path, data_dir: Path, *overrides: str, multirun: bool = False
                  ) -> list[str]:
    """``volseg train [-m] <TINY> <overrides>``, every output under ``cwd``."""
    # The test's overrides last: they win over TINY's.
    return [str(Path(sys.executable).parent / "volseg"), "train", *(["-m"] if multirun else []),
            *TINY, f"paths.root_dir={cwd}", f"paths.data_dir={data_dir}", *overrides]


def train(cwd: Path, data_dir: Path, *overrides: str, multirun: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """Run `train_command` to its end."""
    return subprocess.run(train_command(cwd, data_dir, *overrides, multirun=multirun), cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def job_metrics(sweep_dir: Path) -> dict[int, dict]:
    """``{job number: its metrics.json}`` for every numbered job folder of a sweep."""
    return {int(p.name): json.loads((p / "metrics.json").read_text())
            for p in sweep_dir.iterdir() if p.name.isdigit() and (p / "metrics.json").is_file()}


def overrides(job_dir: Path) -> set[str]:
    """The command-line overrides that made this job (Hydra keeps them with it)."""
    return set(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
