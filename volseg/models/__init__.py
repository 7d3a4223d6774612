"""Segmentation networks and the 3D building blocks they share."""

from volseg.models.blocks import (
    ACTS,
    NORMS,
    PADDINGS,
    ConvNormAct,
    group_count,
    make_act,
    make_norm,
)
from volseg.models.unet3d import UNet3D

__all__ = [
    "ACTS",
    "NORMS",
    "PADDINGS",
    "ConvNormAct",
    "UNet3D",
    "group_count",
    "make_act",
    "make_norm",
]
