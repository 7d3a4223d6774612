"""Plan files: written by ``volseg plan``, trained with by ``volseg train plan=<file>``.

A plan file is an ordinary Hydra config of the ``plan`` group (``# @package _global_``, like an
``experiment=`` config): its defaults list selects the data config, ``model=dynamic_unet`` and
the loss; its keys set the planned values; ``plan:`` records what it was made from. It may live
anywhere: `register_plan_files` stores the file named by a ``plan=<path>.yaml`` override in
Hydra's config store under its stem, so Hydra composes it like any group option (and Hydra's
launchers, which carry the store to their jobs, compose it for every job of a sweep). A plan
file inside a ``--config-dir`` folder's ``plan/`` is found by name as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from volseg.io.atomic import atomic_path

PLAN_SUFFIXES = (".yaml", ".yml")


def write_plan_file(path: str | Path, config: dict, title: str) -> Path:
    """Write ``config`` as a ``plan`` group config at ``path``, atomically.

    Args:
        path: the file (its folder is created).
        config: the defaults list and settings.
        title: the first comment line: what the plan was made from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# @package _global_\n# {title}\n"
              f"# Train with: volseg train plan={path}\n")
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return path


def register_plan_files(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each ``plan=<file>.yaml`` replaced by ``plan=<name>``, the file stored
    in Hydra's config store as that option of the ``plan`` group.

    Raises:
        FileNotFoundError: the named plan file does not exist.
        ValueError: it is not a YAML mapping.
    """
    result = []
    for override in overrides:
        key, separator, value = override.partition("=")
        files = value.split(",")  # a sweep over plans: plan=a.yaml,b.yaml
        if not separator or key.lstrip("+") != "plan" or not all(
                f.endswith(PLAN_SUFFIXES) for f in files):
            result.append(override)
            continue
        result.append(f"{key}={','.join(_store(f) for f in files)}")
    return result


def _store(value: str) -> str:
    """Store the plan file ``value`` in Hydra's config store; return its option name."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"plan={value}: no such plan file (volseg plan writes one)")
    config = OmegaConf.load(path)
    if not OmegaConf.is_dict(config):
        raise ValueError(f"plan={value}: a plan file is a YAML mapping")
    OmegaConf.update(config, "plan.file", str(path.resolve()), force_add=True)
    name = "file_" + re.sub(r"\W", "_", str(path.resolve()))
    ConfigStore.instance().store(group="plan", name=name, node=config, package="_global_")
    return name
