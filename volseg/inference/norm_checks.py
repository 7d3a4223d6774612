"""Warnings for normalisation layers used where their statistics mislead.

BatchNorm validates with running statistics estimated over training batches: at the 2-4
patches per step of 3D training those follow whichever patches came last. Instance and group
norm compute statistics over each input instead, so the network's output depends on the field
of view it is given: a sliding-window tile other than the training patch (a whole volume, with
far more air than a foreground-centred patch) shifts every normalised feature. On the built-in
CT phantom an instance-norm U-Net scored test Dice 0.58 / 0.08 (organ / lesion) on whole-volume
tiles and 0.98 / 0.85 on patch-sized ones (docs/benchmarks.md, "Training recipes").
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

# Below this many patches per device BatchNorm's running statistics are noisy.
MIN_BATCH_NORM_PATCHES = 8
_PER_INPUT_NORMS = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)


def batch_norm_warning(net: nn.Module, patches_per_device: int | None) -> str | None:
    """The warning for a network with BatchNorm trained on too few patches, else ``None``."""
    if patches_per_device is None or patches_per_device >= MIN_BATCH_NORM_PATCHES:
        return None
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return None
    return (f"the network uses BatchNorm with {patches_per_device} patches per device "
            f"(data.batch_size={patches_per_device}, under {MIN_BATCH_NORM_PATCHES}): its "
            "statistics are noisy and validation can swing between epochs; set model.norm=instance")


def tile_warning(net: nn.Module, tile_size: Sequence[int] | None,
                 patch_size: Sequence[int] | None, tile_key: str) -> str | None:
    """The warning for a per-input-normalised network tiled unlike its training patch."""
    if tile_size is None or patch_size is None:
        return None
    tile, patch = [int(t) for t in tile_size], [int(p) for p in patch_size]
    if tile == patch or not any(isinstance(m, _PER_INPUT_NORMS) for m in net.modules()):
        return None
    return (f"{tile_key}={tile} differs from the training patch {patch}: instance and group norm "
            "normalise over the whole tile, so the network sees other statistics than in "
            f"training and can segment far worse; set {tile_key}={patch}")


__all__ = ["MIN_BATCH_NORM_PATCHES", "batch_norm_warning", "tile_warning"]
