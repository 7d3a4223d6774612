"""Post-processing chosen on the validation cases, as nnU-Net chooses it.

nnU-Net v2 (Isensee et al. 2021) decides after training, on its validation predictions, whether
removing every connected component but the largest helps: first for the foreground as a whole,
then for each class on its own, each step kept only where it raises the validation Dice.
`PostprocessingSelector` makes the same choice at every validation round, from the label maps
the validation metrics score, and stores it in the module (``SegmentationModule.postprocessing``).
Each checkpoint therefore carries the choice made on its own weights' predictions, and
``test_step`` and ``volseg predict`` apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from volseg.inference.postprocess import CONNECTIVITIES, keep_largest_foreground, largest_part
from volseg.metrics.overlap import dice

# Rows of the accumulated Dice: the argmax, the largest foreground component, and each class's
# largest component on top of either.
RAW, FOREGROUND, RAW_CLASS, FOREGROUND_CLASS = range(4)


def _dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks, by the metrics' own `dice` (NaN when both are empty: the
    case says nothing)."""
    def one_hot(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask)[None, None]

    return float(dice(one_hot(pred), one_hot(target), 1, include_background=True))


def case_dice(
    prediction: np.ndarray, target: np.ndarray, num_classes: int, connectivity: int = 26,
    annotated: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class Dice of one case under each candidate post-processing.

    Returns a ``(4, num_classes - 1)`` array: rows `RAW`, `FOREGROUND` (largest foreground
    component), `RAW_CLASS` and `FOREGROUND_CLASS` (column *c* with only class *c+1*'s largest
    component kept, on the raw or the foreground-cleaned map). ``annotated`` limits the scoring
    to annotated voxels (sparse labels); components are found on the whole prediction.
    """
    keep = np.ones(prediction.shape, bool) if annotated is None else annotated
    cleaned = keep_largest_foreground(prediction, connectivity)
    out = np.empty((4, num_classes - 1))
    for column, cls in enumerate(range(1, num_classes)):
        truth = (target == cls) & keep
        for row, labels in ((RAW, prediction), (FOREGROUND, cleaned)):
            mask = labels == cls
            out[row, column] = _dice(mask & keep, truth)
            out[row + 2, column] = _dice(largest_part(mask, connectivity) & keep, truth)
    return out


def choose(mean_dice: np.ndarray, min_gain: float = 0.0) -> dict[str, Any]:
    """nnU-Net's choice from the case-mean Dice of each candidate (`case_dice`'s rows).

    The largest foreground component is kept when it raises the mean over classes by more than
    ``min_gain`` and lowers no class; then each class keeps only its largest component when
    that raises its own Dice by more than ``min_gain``. NaN (a class no case held) never wins.
    """
    base = mean_dice[RAW]
    foreground = bool(np.nanmean(mean_dice[FOREGROUND]) > np.nanmean(base) + min_gain
                      and not np.any(mean_dice[FOREGROUND] < base))
    if foreground:
        base = mean_dice[FOREGROUND]
    on_top = mean_dice[FOREGROUND_CLASS if foreground else RAW_CLASS]
    classes = [c + 1 for c in range(len(base)) if on_top[c] > base[c] + min_gain]
    chosen = np.where([c + 1 in classes for c in range(len(base))], on_top, base)
    return {"largest_foreground": foreground, "largest_component": classes,
            "dice_before": float(np.nanmean(mean_dice[RAW])),
            "dice_after": float(np.nanmean(chosen))}


class PostprocessingSelector(pl.Callback):
    """Chooses, at each validation round, which largest-component cleaning the module applies.

    The choice (`choose`) lands in ``pl_module.postprocessing`` before the checkpoint callbacks
    save, and ``val/dice_postprocessed`` (the mean validation Dice with it applied) is logged;
    a test that follows in the same process uses the latest round's choice.
    Under DDP the per-case sums are added over all processes first, so every rank chooses the
    same.

    Args:
        connectivity: 26 (faces, edges, corners; nnU-Net's), 18 or 6.
        min_gain: the Dice a step must add to be chosen; 0 takes any strict gain.
    """

    def __init__(self, connectivity: int = 26, min_gain: float = 0.0) -> None:
        if connectivity not in CONNECTIVITIES:
            raise ValueError(f"callbacks.postprocessing.connectivity must be one of "
                             f"{CONNECTIVITIES}, got {connectivity}")
        if min_gain < 0:
            raise ValueError(f"callbacks.postprocessing.min_gain must be >= 0, got {min_gain}")
        self.connectivity, self.min_gain = int(connectivity), float(min_gain)
        self._sums: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self.choice: dict[str, Any] | None = None  # the latest validation round's

    def on_validation_epoch_start(self, trainer: pl.Trainer,
                                  pl_module: pl.LightningModule) -> None:
        self._sums = self._counts = None

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Mapping | None,
        batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not outputs or "prediction" not in outputs:
            return
        ignore_index = getattr(pl_module, "ignore_index", None)
        num_classes = len(pl_module.class_names)
        predictions = outputs["prediction"].cpu().numpy()
        targets = batch["label"].reshape(predictions.shape).cpu().numpy()
        for prediction, target in zip(predictions, targets, strict=True):
            annotated = None if ignore_index is None else target != ignore_index
            dice = case_dice(prediction, target, num_classes, self.connectivity, annotated)
            if self._sums is None:
                self._sums, self._counts = np.zeros_like(dice), np.zeros_like(dice)
            self._sums += np.nan_to_num(dice)
            self._counts += ~np.isnan(dice)

    def on_validation_epoch_end(self, trainer: pl.Trainer,
                                pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        num_classes = len(pl_module.class_names)
        local = np.zeros((2, 4, num_classes - 1))
        if self._sums is not None:
            local[0], local[1] = self._sums, self._counts
        # Every rank joins the reduction, also one that validated no case.
        total = trainer.strategy.reduce(torch.as_tensor(local, device=pl_module.device),
                                        reduce_op="sum").cpu().numpy()
        if not total[1].any():
            return
        with np.errstate(invalid="ignore"):
            mean = np.where(total[1] > 0, total[0] / np.maximum(total[1], 1), np.nan)
        choice = choose(mean, self.min_gain)
        self.choice = {
            "largest_foreground": choice["largest_foreground"],
            "largest_component": choice["largest_component"],
            "connectivity": self.connectivity,
        }
        pl_module.postprocessing = dict(self.choice)
        pl_module.log("val/dice_postprocessed", choice["dice_after"])

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # `volseg train` validates a checkpoint right before testing it (or its fit's last
        # round did, when that round saved it as the best); loading it again for
        # the test restored the choice saved in it, which predates that validation when the
        # checkpoint came from elsewhere (`train=false ckpt_path=...`).
        if self.choice is not None:
            pl_module.postprocessing = dict(self.choice)
