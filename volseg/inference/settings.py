"""How ``volseg predict`` predicts each case: the one home of its options (``predictor.*``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from volseg.inference.postprocess import CONNECTIVITIES
from volseg.inference.sliding_window import check_batch_size, check_overlap, check_tile_size

UNCERTAINTIES = ("entropy", "variance")
# `precision`: the autocast dtype of the network's forward passes (None: float32).
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class PredictionSettings:
    """Prediction options, checked when built (``conf/predict.yaml``'s ``predictor`` node).

    Attributes:
        tile_size, overlap, batch_size: override the checkpoints' sliding-window settings;
            ``None`` keeps each checkpoint's own.
        tta_axes: spatial axes to mirror for test-time augmentation
            (`volseg.inference.predictor.mirrored_probabilities`); ``None`` for none.
        mc_dropout: Monte-Carlo dropout passes per network (0: dropout off, one pass).
        uncertainty: with ``mc_dropout``, ``"entropy"`` of the mean probabilities or
            ``"variance"``: the per-class variance of the probabilities over the passes,
            averaged over classes.
        save_probabilities: also write the mean class probabilities.
        postprocess: apply the post-processing training chose on the validation cases (for an
            ensemble, the steps every checkpoint chose); ``False`` for the plain argmax.
        keep_largest_component: classes (label values) that keep only their largest connected
            component, after ``postprocess``; ``True`` for every foreground class; ``None``
            for none.
        connectivity: 26, 18 or 6 (see `volseg.inference.postprocess.keep_largest_component`).
        precision: ``"32"``, or ``"bf16"``/``"16"``: run the network under autocast in that
            dtype (faster where the hardware has it, e.g. bf16 on recent GPUs); stitching,
            softmax and averaging stay float32.
    """

    tile_size: Sequence[int] | None = None
    overlap: float | None = None
    batch_size: int | None = None
    tta_axes: Sequence[int] | None = None
    mc_dropout: int = 0
    uncertainty: str = "entropy"
    save_probabilities: bool = False
    postprocess: bool = True
    keep_largest_component: bool | Sequence[int] | None = None
    connectivity: int = 26
    precision: str = "32"

    def __post_init__(self) -> None:
        # Plain values, whether given by Hydra (ListConfig, int precision) or by a caller.
        # The sliding window's own checks, here before any checkpoint or case is read.
        if self.tile_size is not None:
            self.tile_size = list(check_tile_size(list(self.tile_size)))
        if self.overlap is not None:
            check_overlap(self.overlap)
        if self.batch_size is not None:
            check_batch_size(self.batch_size)
        self.tta_axes = check_tta_axes(self.tta_axes)
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, "
                             f"got {self.precision!r}")
        mc_dropout = self.mc_dropout
        if isinstance(mc_dropout, bool) or int(mc_dropout) != mc_dropout or mc_dropout < 0:
            raise ValueError(f"mc_dropout must be an integer >= 0, got {mc_dropout}")
        self.mc_dropout = int(mc_dropout)
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTIES}, "
                             f"got {self.uncertainty!r}")
        if self.connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, "
                             f"got {self.connectivity}")
        if self.keep_largest_component not in (None, True, False):
            self.keep_largest_component = [int(c) for c in self.keep_largest_component]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def largest_component_classes(self, num_classes: int) -> list[int]:
        """``keep_largest_component`` as class values, checked against ``num_classes``."""
        chosen = self.keep_largest_component
        classes = list(range(1, num_classes)) if chosen is True else list(chosen or [])
        if any(not 0 < c < num_classes for c in classes):
            raise ValueError(f"keep_largest_component: classes must be in 1..{num_classes - 1}, "
                             f"got {classes}")
        return classes


def check_tta_axes(axes: Sequence[int] | None) -> list[int]:
    """``axes`` as a sorted list of distinct spatial axes; ValueError naming ``tta_axes``."""
    checked = sorted(set(int(a) for a in axes or ()))
    if any(a not in (0, 1, 2) for a in checked):
        raise ValueError(f"tta_axes must be spatial axes among 0, 1, 2, got {list(axes)}")
    return checked
