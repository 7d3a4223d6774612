"""Segmentation networks and the 3D building blocks they share."""

from volseg.models.blocks import (
    ACTS,
    NORMS,
    PADDINGS,
    BasicBlock3d,
    Bottleneck3d,
    ConvNormAct,
    Res2NetBlock3d,
    SqueezeExcitation3d,
    group_count,
    make_act,
    make_norm,
)
from volseg.models.dynamic_unet import DynamicUNet
from volseg.models.res2unet3d import Res2UNet3D
from volseg.models.residual_unet3d import ResidualUNet3D
from volseg.models.resnet_encoder import ResNetEncoder3d
from volseg.models.resnet_seg import ResNetSeg
from volseg.models.resunet import ResUNet
from volseg.models.unet3d import UNet3D

__all__ = [
    "ACTS",
    "NORMS",
    "PADDINGS",
    "BasicBlock3d",
    "Bottleneck3d",
    "ConvNormAct",
    "DynamicUNet",
    "Res2NetBlock3d",
    "Res2UNet3D",
    "ResNetEncoder3d",
    "ResNetSeg",
    "ResUNet",
    "ResidualUNet3D",
    "SqueezeExcitation3d",
    "UNet3D",
    "group_count",
    "make_act",
    "make_norm",
]
