"""Segmentation losses: ``loss(logits (N, C, X, Y, Z), labels (N, X, Y, Z)) -> scalar``."""

from volseg.losses.compound import DeepSupervisionLoss, DiceCELoss, WeightedSum
from volseg.losses.cross_entropy import CrossEntropyLoss
from volseg.losses.dice import DiceLoss

__all__ = [
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "WeightedSum",
]
