"""Python, NumPy and torch random states saved in checkpoints and restored on resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def capture_rng_state() -> dict[str, Any]:
    """Every global random generator's state as tensors, tuples and numbers.

    Only such plain types, so that checkpoints still load with ``torch.load(weights_only=True)``
    (NumPy's state array is kept as a tensor, not an ``ndarray``).
    """
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global random generators to a `capture_rng_state` result."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(pl.Callback):
    """Saves the random generators with every checkpoint; a resumed fit continues from them.

    Lightning keeps weights, optimizer, scheduler, loops and callbacks in a checkpoint, but not
    the random generators that draw patches, augmentations and dropout masks: without this a
    resumed run draws as if freshly seeded. The state is applied at the start of training,
    after the sanity check and the model's construction have drawn their numbers.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
