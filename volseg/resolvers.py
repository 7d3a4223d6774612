"""OmegaConf resolvers the configs use; registered when volseg is imported."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${pid:}``: the process id, which keeps run folders of simultaneous starts apart."""
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
