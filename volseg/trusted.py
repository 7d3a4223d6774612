"""Instantiate configs stored in checkpoints only from an allow-list of module prefixes.

A checkpoint's hyperparameters name classes for Hydra to build (``_target_``). A checkpoint
from elsewhere could name ``os.system``; building from it must refuse before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate

ALLOWED_PREFIXES = ("volseg.", "torch.nn.", "torch.optim.", "monai.networks.")


class UntrustedTargetError(ValueError):
    """A config names a ``_target_`` outside the allow-list."""


def check_targets(config: Any, allowed: Sequence[str] = ALLOWED_PREFIXES, where: str = "") -> None:
    """Raise `UntrustedTargetError` for the first ``_target_`` not under an allowed prefix."""
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not any(str(target).startswith(p) for p in allowed):
            raise UntrustedTargetError(
                f"refusing to build {target!r} at {where or '<root>'}: only {', '.join(allowed)} "
                "are allowed"
            )
        for key, value in config.items():
            check_targets(value, allowed, f"{where}.{key}" if where else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_targets(value, allowed, f"{where}[{i}]")


def instantiate_trusted(config: Mapping, *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` after `check_targets` has passed on ``config``."""
    check_targets(config)
    return instantiate(config, *args, **kwargs)
