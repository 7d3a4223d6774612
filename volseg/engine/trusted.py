"""Instantiate configs stored in checkpoints only from an allow-list of module prefixes.

A checkpoint's hyperparameters name classes for Hydra to build (``_target_``). A checkpoint
from elsewhere could name ``os.system``; building from it must refuse before anything runs.

The name alone is not enough: Hydra follows attributes through modules, so
``volseg.io.atomic.os.system`` starts with ``volseg.`` yet is ``os.system``. A target must
therefore resolve to a class that is itself defined under an allowed prefix. Only classes:
every stored config builds a network, loss, optimizer or scheduler, while a function under an
allowed prefix could do whatever its arguments say (``volseg.io.atomic.write_json`` writes any
file). ``torch.optim.`` stays allowed because every checkpoint's optimizer and scheduler
configs name its classes; they take parameters and numbers and run nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra._internal.utils import _locate
from hydra.utils import instantiate

ALLOWED_PREFIXES = ("volseg.", "torch.nn.", "torch.optim.", "monai.networks.")


class UntrustedTargetError(ValueError):
    """A config names a ``_target_`` outside the allow-list."""


def check_targets(config: Any, allowed: Sequence[str] = ALLOWED_PREFIXES, where: str = "") -> None:
    """Raise `UntrustedTargetError` for the first ``_target_`` that is not a class defined
    under an allowed prefix (a name that resolves to nothing is left to Hydra's error)."""
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None:
            _check_target(str(target), allowed, where or "<root>")
        for key, value in config.items():
            check_targets(value, allowed, f"{where}.{key}" if where else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_targets(value, allowed, f"{where}[{i}]")


def _check_target(target: str, allowed: Sequence[str], where: str) -> None:
    def refuse(reason: str) -> UntrustedTargetError:
        return UntrustedTargetError(f"refusing to build {target!r} at {where}: {reason}")

    if not any(target.startswith(p) for p in allowed):
        raise refuse(f"only {', '.join(allowed)} are allowed")
    try:
        # What `instantiate` would call, resolved as it resolves it (Hydra's own lookup). It
        # imports modules under an allowed prefix only: the name's prefix was checked above.
        found = _locate(target)
    except ImportError:
        return  # nothing by that name: Hydra's own error says so when it is built
    if not isinstance(found, type):
        raise refuse("only classes are built from stored configs")
    module = f"{getattr(found, '__module__', '')}."
    if not any(module.startswith(p) for p in allowed):
        raise refuse(f"it is {found.__module__}.{found.__qualname__}, outside "
                     f"{', '.join(allowed)}")


def instantiate_trusted(config: Mapping, *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` after `check_targets` has passed on ``config``."""
    check_targets(config)
    return instantiate(config, *args, **kwargs)
