"""Class probabilities on a case's own grid -> its label map: the one way, for test and predict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from volseg.data.preprocess import class_argmax
from volseg.inference.postprocess import apply_postprocessing, keep_largest_component


def class_labels(
    probabilities: torch.Tensor,
    postprocessing: Mapping[str, Any] | None = None,
    keep_largest: Sequence[int] = (),
    connectivity: int = 26,
) -> np.ndarray:
    """The uint8 ``(x, y, z)`` label map of ``(K, x, y, z)`` probabilities.

    The argmax, then the post-processing training chose on the validation cases
    (`volseg.engine.postprocessing_selector`), then ``keep_largest``: classes that keep only
    their largest component, a prediction option. `SegmentationModule.test_step` and
    `Predictor` both call this on probabilities restored onto the original grid
    (`volseg.data.preprocess.Preprocessor.restore`), so a test score describes exactly the
    label maps ``volseg predict`` writes.
    """
    labels = class_argmax(probabilities).cpu().numpy()
    if postprocessing:
        labels = apply_postprocessing(labels, postprocessing)
    if keep_largest:
        labels = keep_largest_component(labels, keep_largest, connectivity)
    return labels
