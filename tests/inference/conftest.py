"""Tiny but complete checkpoints for the predict tests: geometry and plumbing, not accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from tests.io.test_volume import OBLIQUE
from volseg.engine import SegmentationModule
from volseg.io import Volume

CLASS_NAMES = ["background", "organ", "lesion"]


def make_checkpoint(path: Path, seed: int = 0, dropout: float = 0.0,
                    class_names: list[str] = CLASS_NAMES,
                    regions: dict[str, list[int]] | None = None,
                    postprocessing: dict | None = None, in_channels: int = 1) -> Path:
    """Save an untrained `SegmentationModule` as `volseg train` would, and return ``path``
    (with ``postprocessing`` as the validation rounds' choice, when given)."""
    pl.seed_everything(seed)
    module = SegmentationModule(
        net={"_target_": "volseg.models.UNet3D", "in_channels": in_channels,
             "out_channels": len(class_names), "features": 4, "num_levels": 2,
             "dropout": dropout},
        loss={"_target_": "volseg.losses.DiceCELoss"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
        scheduler=None,
        class_names=class_names,
        preprocessing={"spacing": [1.5, 1.5, 2.0], "intensity": "ct_window",
                       "window": [-160.0, 240.0]},
        inference={"tile_size": [16, 16, 8], "overlap": 0.5},
        regions=regions,
    )
    if postprocessing is not None:
        module.postprocessing = postprocessing
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path)
    return path


def oblique_volume(shape=(12, 12, 6), seed: int = 0, spacing=(0.7, 1.1, 3.3)) -> Volume:
    """A random CT-like volume on an oblique, anisotropic, off-origin grid."""
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(0, 100, shape).astype(np.float32), spacing,
                  (-12.5, 40.0, -250.0), OBLIQUE)
