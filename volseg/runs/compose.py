"""Where volseg's configs live, and composing them as the command line does.

The configs are the package ``volseg.conf`` (the top-level ``conf/`` folder of a checkout,
installed inside the wheel): `builtin_config_dir` is the one place that finds them, and Hydra apps
name them `CONFIG_PATH`.

``volseg train a=b`` has Hydra compose ``train.yaml`` with ``a=b``, make the run folder
(``hydra.run.dir``: ``<paths.log_dir>/<task_name>/runs/<time>_<pid>``) and save the composed
config in its ``.hydra/``. `compose_run` does the same three steps without Hydra's main, so
`volseg.train(overrides=[...])` from a notebook writes an ordinary run folder that
`volseg.load_run`, ``ckpt_path=last`` and ``volseg report`` read like any other.
`compose_config` only composes (``volseg plan``, ``volseg verify``: nothing is written).
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from volseg.planning.plan_file import register_plan_files
from volseg.runs.folders import task_config

CONFIG_PACKAGE = "volseg.conf"
# For ``@hydra.main(config_path=CONFIG_PATH)``: the same package, as Hydra names one.
CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"


def builtin_config_dir() -> Path:
    """The folder of volseg's own configs: ``conf/`` in a checkout, ``volseg/conf/`` in a wheel."""
    return Path(str(importlib.resources.files(CONFIG_PACKAGE)))


def split_config_dir(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Split Hydra's ``--config-dir DIR`` (``-cd DIR``, ``--config-dir=DIR``) off ``argv``.

    For the commands that compose without Hydra's main (``volseg plan``, ``volseg verify``),
    so they take a folder of the user's own configs as ``volseg train`` does.

    Returns:
        The folder (``None`` when not given) and the remaining arguments: the overrides.
    """
    folder, rest, arguments = None, [], list(argv)
    while arguments:
        argument = arguments.pop(0)
        if argument in ("--config-dir", "-cd"):
            if not arguments:
                raise ValueError(f"{argument} needs a folder")
            folder = Path(arguments.pop(0))
        elif argument.startswith("--config-dir="):
            folder = Path(argument.split("=", 1)[1])
        else:
            rest.append(argument)
    return folder, rest


def compose_config(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    config_dir: str | Path | None = None,
) -> DictConfig:
    """``<config_name>.yaml`` composed with ``overrides``, as the command line composes it.

    Args:
        overrides: command-line style overrides, ``["model=unet3d", "trainer.max_epochs=5"]``.
        config_name: the entry config (``train``, ``predict``, ``evaluate``).
        config_dir: a folder of the user's own configs (``experiment/mine.yaml``,
            ``data/mydata.yaml``), searched after volseg's own, as ``--config-dir`` does on
            the command line: its files may add options to every group and use all of ours.

    Returns:
        The config with ``hydra`` included and Hydra's global config set to it, so
        ``${hydra:...}`` interpolations resolve; ``hydra.runtime.output_dir`` is the current
        folder until `compose_run` picks the run folder.

    Raises:
        FileNotFoundError: ``config_dir`` is not a folder.
        ValueError: both ``config_dir`` and a ``hydra.searchpath=`` override.
    """
    overrides = register_plan_files(overrides)
    if config_dir is not None:
        folder = Path(config_dir).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"config_dir={config_dir}: no such folder")
        if any(o.split("=", 1)[0].lstrip("+~") == "hydra.searchpath" for o in overrides):
            raise ValueError("pass config_dir or a hydra.searchpath override, not both")
        overrides.insert(0, f"hydra.searchpath=[file://{folder}]")
    primary = str(builtin_config_dir().resolve())
    with initialize_config_dir(config_dir=primary, version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path.cwd())
        cfg.hydra.job.num = 0
    # hydra.run.dir interpolates ${hydra:...}: set a copy (set_config makes the config's hydra
    # node read-only, and compose_run still fills in the run folder).
    HydraConfig.instance().set_config(copy.deepcopy(cfg))
    return cfg


def compose_run(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    output_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
) -> DictConfig:
    """`compose_config`, then make the run folder and save the config in its ``.hydra/``.

    Args:
        overrides: command-line style overrides.
        config_name: the entry config (``train``).
        output_dir: the run folder; default the CLI's ``hydra.run.dir``, i.e.
            ``<paths.log_dir>/<task_name>/runs/<time>_<pid>``, where ``paths.log_dir`` is
            ``outputs/`` under the current folder (override ``paths.root_dir`` or
            ``paths.log_dir`` to move it); resuming (``ckpt_path=...``) continues in the
            checkpoint's run folder, as on the command line.
        config_dir: a folder of the user's own configs (see `compose_config`).

    Returns:
        The config, ``paths.output_dir`` resolving to the run folder.
    """
    cfg = compose_config(overrides, config_name, config_dir)
    run_dir = Path(output_dir) if output_dir is not None else Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir.absolute())
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


__all__ = [
    "CONFIG_PATH", "builtin_config_dir", "compose_config", "compose_run", "save_hydra_files",
    "split_config_dir",
]
