"""Per-class boolean masks from a label map or a one-hot tensor, the input every metric takes."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_FORMS = "integer labels (N, X, Y, Z) / (X, Y, Z), or one-hot (N, C, X, Y, Z)"


def check_num_classes(num_classes: int, include_background: bool) -> None:
    """Raise ``ValueError`` unless ``num_classes`` leaves at least one class to score."""
    minimum = 1 if include_background else 2
    if num_classes < minimum:
        raise ValueError(
            f"num_classes must be >= {minimum} with include_background={include_background}, "
            f"got {num_classes}"
        )


def class_masks(x: Tensor | np.ndarray, num_classes: int, name: str) -> Tensor:
    """Return a boolean ``(N, C, X, Y, Z)`` tensor, one mask per class, from ``x``.

    Only 3-D volumes are scored. The rank and dtype decide the form, without guessing:

    - 5-D: one-hot ``(N, C, X, Y, Z)`` (boolean, integer, or probabilities thresholded at 0.5);
    - 3-D or 4-D with an integer dtype: labels ``(X, Y, Z)`` or ``(N, X, Y, Z)``, always, even
      when dim 1 happens to equal ``num_classes``. So an integer 2-D one-hot ``(N, C, H, W)``
      cannot be told from a label map and is read as one;
    - 3-D or 4-D boolean or float: refused. Such a tensor is a set of masks or probabilities
      (2-D one-hot ``(N, C, H, W)`` / ``(C, H, W)``, or unbatched one-hot ``(C, X, Y, Z)``),
      not labels; a binary mask is a label map once cast to integers (``mask.long()``);
    - any other rank (1-D, 2-D images, 6-D): refused.

    Args:
        x: integer labels ``(N, X, Y, Z)`` / ``(X, Y, Z)``, or one-hot ``(N, C, X, Y, Z)``.
        num_classes: C, including background (class 0).
        name: what to call ``x`` in error messages.

    Raises:
        ValueError: on a shape that is neither form, a boolean or float 3-D / 4-D tensor, or
            labels outside ``[0, num_classes)``.
    """
    x = torch.as_tensor(x)
    if x.ndim == 5:
        if x.shape[1] != num_classes:
            raise ValueError(
                f"{name} looks one-hot (N, C, X, Y, Z) but C={x.shape[1]} != "
                f"num_classes={num_classes}"
            )
        return x > 0.5 if torch.is_floating_point(x) else x != 0
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be {_FORMS}; got shape {tuple(x.shape)}. Only 3-D volumes are "
            "scored: 1-D, 2-D and higher-dimensional inputs are not supported"
        )
    if x.dtype == torch.bool or torch.is_floating_point(x) or torch.is_complex(x):
        # A 4-D mask or probability tensor is (N, C, H, W) 2-D one-hot as likely as a label
        # map, and a 3-D one may be (C, H, W): reading it as labels would score the wrong thing.
        raise ValueError(
            f"{name} is a {x.ndim}-D {x.dtype} tensor of shape {tuple(x.shape)}, but a label "
            f"map must have an integer dtype. 2-D inputs such as one-hot (N, C, H, W) are not "
            f"supported; expected {_FORMS} (cast a binary mask with .long())"
        )
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.numel() and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(
            f"{name} labels must lie in [0, num_classes={num_classes}), "
            f"got range [{int(x.min())}, {int(x.max())}]"
        )
    # One comparison per class builds 1-byte masks directly; F.one_hot would go through int64,
    # 8 bytes per voxel and class, which is 300 MB for a 3-class 256 x 256 x 200 volume.
    return torch.stack([x == c for c in range(num_classes)], dim=1)


def paired_masks(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    num_classes: int,
    include_background: bool,
) -> tuple[Tensor, Tensor]:
    """Masks of ``pred`` and ``target``, same shape ``(N, K, X, Y, Z)``, background dropped
    unless ``include_background`` (column ``k`` is then class ``k + 1``). Each input is read,
    and checked, by :func:`class_masks`."""
    check_num_classes(num_classes, include_background)
    p = class_masks(pred, num_classes, "pred")
    t = class_masks(target, num_classes, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if not include_background:
        p, t = p[:, 1:], t[:, 1:]
    return p, t
