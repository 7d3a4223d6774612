"""The configs under conf/, composed as the command line does, for Python callers (notebooks).

``python train.py a=b`` has Hydra compose ``conf/train.yaml`` with ``a=b``, make the run folder
(``hydra.run.dir``: ``<paths.log_dir>/<task_name>/runs/<time>_<pid>``) and save the composed
config in its ``.hydra/``. `compose_run` does the same three steps without Hydra's main, so
`volseg.train(overrides=[...])` from a notebook writes an ordinary run folder that
`volseg.load_run`, ``ckpt_path=last`` and `volseg.report` read like any other.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from volseg.runs import task_config

# conf/ beside the package, in a source checkout (the package does not ship it).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_run(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    output_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
) -> DictConfig:
    """Compose ``<config_dir>/<config_name>.yaml`` with ``overrides`` and make its run folder.

    Args:
        overrides: command-line style overrides, ``["model=unet3d", "trainer.max_epochs=5"]``.
        config_name: the entry config (``train``).
        output_dir: the run folder; default the CLI's ``hydra.run.dir``, i.e.
            ``<paths.log_dir>/<task_name>/runs/<time>_<pid>``, where ``paths.log_dir`` is
            ``outputs/`` under the current folder (override ``paths.root_dir`` or
            ``paths.log_dir`` to move it); resuming (``ckpt_path=...``) continues in the
            checkpoint's run folder, as on the command line.
        config_dir: the folder holding the configs; default the checkout's ``conf/``.

    Returns:
        The config with ``hydra`` included, ``paths.output_dir`` resolving to the run folder;
        Hydra's global config is set to it, so ``${hydra:...}`` interpolations resolve.

    Raises:
        FileNotFoundError: no ``config_dir`` (an installed package without its conf/).
    """
    config_dir = Path(config_dir) if config_dir is not None else CONF_DIR
    if not config_dir.is_dir():
        raise FileNotFoundError(f"{config_dir}: no config folder; pass config_dir=<conf/>")
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    # hydra.run.dir interpolates ${hydra:runtime.cwd} (through paths.log_dir): set a copy
    # first (set_config makes the config's hydra node read-only).
    HydraConfig.instance().set_config(copy.deepcopy(cfg))
    run_dir = Path(output_dir) if output_dir is not None else Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir.absolute())
        cfg.hydra.job.name = config_name
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    save_hydra_files(cfg)
    return cfg


def save_hydra_files(cfg: DictConfig) -> Path:
    """Write ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` into the run's ``.hydra/``,
    as Hydra's run does (unresolved, as composed); returns that folder."""
    folder = Path(cfg.hydra.runtime.output_dir) / str(cfg.hydra.output_subdir or ".hydra")
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_config(cfg), folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(cfg.hydra.overrides.task)), folder / "overrides.yaml")
    return folder


__all__ = ["CONF_DIR", "compose_run", "save_hydra_files"]
