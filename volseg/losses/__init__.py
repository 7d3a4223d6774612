"""Segmentation losses: ``loss(logits (N, C, X, Y, Z), labels (N, X, Y, Z)) -> scalar``."""

from volseg.losses.compound import DeepSupervisionLoss, DiceCELoss, WeightedSum
from volseg.losses.cross_entropy import CrossEntropyLoss, SparseWeightedCrossEntropyLoss
from volseg.losses.dice import DiceLoss
from volseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalTverskyLoss",
    "SparseWeightedCrossEntropyLoss",
    "TverskyLoss",
    "WeightedSum",
]
