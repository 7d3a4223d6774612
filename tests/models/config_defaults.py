"""Shared check for the model tests: a conf/model YAML lists every constructor default."""

import inspect
from pathlib import Path

from omegaconf import OmegaConf


def resolved_config_with_defaults(config: Path, cls: type, in_channels: int,
                                  num_classes: int) -> dict:
    """The YAML resolved against ``data``; asserts it holds every constructor default."""
    cfg = OmegaConf.merge(
        {"data": {"in_channels": in_channels, "num_classes": num_classes}},
        {"model": OmegaConf.load(config)},
    )
    node = OmegaConf.to_container(cfg.model, resolve=True)
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    # Every constructor argument is in the YAML, with the paper default the class also uses.
    assert {k: node[k] for k in defaults} == defaults
    return node
