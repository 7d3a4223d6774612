"""``volseg train`` as typed, with a folder of the user's own configs (``--config-dir``).

A sweep from an empty folder with no path override is the README's own `volseg train -m`
command, which tests/test_docs.py runs as written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import volseg
from tests.conftest import FAST

# FAST without its validation and test work: a run then costs a few seconds.
QUICK = [*FAST, "trainer.max_epochs=1", "data.samples_per_epoch=2", "test=false",
         "trainer.num_sanity_val_steps=0", "module.surface_metrics=false", "logger=none"]


def volseg_train(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "volseg"
    return subprocess.run([str(script), "train", *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def write_user_configs(folder: Path) -> Path:
    """``<folder>/experiment/mine.yaml`` using our groups, and a model option of its own."""
    (folder / "experiment").mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "experiment" / "mine.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /model: tiny
          - override /loss: dice
          - override /scheduler: none
        task_name: mine
        tags: [mine]
        """))
    # Our unet3d with a width of its own: a user's option interpolating our data group.
    (folder / "model" / "tiny.yaml").write_text(textwrap.dedent("""\
        defaults:
          - unet3d
        features: 2
        num_levels: 2
        """))
    return folder


@pytest.mark.slow
def test_config_dir_adds_the_users_experiment(tmp_path, shared_data_dir):
    configs = write_user_configs(tmp_path / "myconf")
    ours = [o for o in QUICK if not o.startswith("model.")]  # the experiment picks the model
    done = volseg_train("--config-dir", str(configs), "experiment=mine", *ours,
                        f"paths.data_dir={shared_data_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "mine" / "runs").iterdir()
    resolved = (run / "config.yaml").read_text()
    assert "features: 2" in resolved and "DiceLoss" in resolved
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


def test_compose_run_takes_the_same_folder_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = write_user_configs(tmp_path / "myconf")
    cfg = volseg.compose_run(["experiment=mine"], config_dir="myconf")
    assert cfg.model.features == 2 and cfg.model.num_levels == 2
    assert cfg.model.in_channels == 1  # our unet3d, interpolating our data group
    assert cfg.loss._target_ == "volseg.losses.DiceLoss"
    run_dir = Path(cfg.paths.output_dir)
    assert run_dir.parent == tmp_path / "outputs" / "mine" / "runs"
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert configs.is_dir()


def test_a_missing_config_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config_dir=nowhere"):
        volseg.compose_run(["experiment=mine"], config_dir="nowhere")
