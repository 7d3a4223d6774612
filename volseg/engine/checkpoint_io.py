"""Checkpoints written to a temporary file beside their final name, then renamed onto it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from volseg.io.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose files are complete or absent, never half-written.

    Lightning's own save goes through an fsspec transaction, which on a local disk writes to
    the system temp folder and moves the file across: not a rename on the same file system,
    and nothing flushed to disk first. Here the checkpoint is written and fsynced beside its
    final name (`volseg.io.atomic.atomic_path`), then renamed onto it, so a crash or ``kill -9``
    mid-write leaves the previous ``last.ckpt`` as it was.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
