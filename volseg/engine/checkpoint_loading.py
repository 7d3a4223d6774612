"""Trained networks from checkpoints: the module rebuilt safely, then handed to inference."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch

from volseg.engine.module import SegmentationModule
from volseg.engine.trusted import UntrustedTargetError
from volseg.inference.network import TrainedNetwork


def load_module(ckpt_path: str | Path, device: str | torch.device = "cpu") -> SegmentationModule:
    """Rebuild a trained `SegmentationModule` from its checkpoint alone, in eval mode.

    A checkpoint may come from anywhere, so nothing in it runs: it is unpickled with
    ``weights_only=True`` (tensors and plain containers only), and its stored configs are built
    only from allow-listed modules (`volseg.engine.trusted`), all of them checked before any is
    built.

    Raises:
        FileNotFoundError: no such file.
        volseg.engine.trusted.UntrustedTargetError: a stored config names a target outside the
            allow-list (``os.system``, ...); the message names the checkpoint.
        pickle.UnpicklingError: the file holds more than plain weights and data (a pickled
            object that would run code when loaded).
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (ckpt_path)")
    try:
        module = SegmentationModule.load_from_checkpoint(path, map_location=device,
                                                         weights_only=True)
    except UntrustedTargetError as error:
        raise UntrustedTargetError(f"{path}: {error}") from None
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise pickle.UnpicklingError(
            f"{path}: refusing to load: it holds more than weights and plain data ({reason})"
        ) from None
    return module.eval().to(device)


def load_networks(
    ckpt_paths: str | Path | Sequence[str | Path], device: str | torch.device = "cpu"
) -> list[TrainedNetwork]:
    """The trained networks of one checkpoint or several (an ensemble, e.g. the folds).

    Raises:
        ValueError: a checkpoint's preprocessing, class names or input channels differ from
            the first one's (their probabilities would not describe the same voxels or classes).
    """
    paths = [ckpt_paths] if isinstance(ckpt_paths, (str, Path)) else list(ckpt_paths)
    if not paths:
        raise ValueError("ckpt_path: no checkpoint given")
    networks = [load_module(path, device).trained_network() for path in paths]
    first = networks[0]
    for path, trained in zip(paths[1:], networks[1:]):
        for name, value, reference in (
            ("preprocessing", trained.preprocessor.to_dict(), first.preprocessor.to_dict()),
            ("class names", trained.class_names, first.class_names),
            ("in_channels", trained.in_channels, first.in_channels),
        ):
            if value != reference:
                raise ValueError(f"{path}: {name} {value} differ from {paths[0]}'s {reference}; "
                                 "an ensemble needs the same ones")
    return networks
