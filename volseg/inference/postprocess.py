"""Label-map post-processing: keep the largest connected component of chosen classes."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

# 26-connectivity: voxels touching by a face, an edge or a corner are one component, so a thin
# oblique structure is not cut into pieces (nnU-Net's choice). ``connectivity=1`` gives 6.
_STRUCTURES = {26: ndimage.generate_binary_structure(3, 3),
               18: ndimage.generate_binary_structure(3, 2),
               6: ndimage.generate_binary_structure(3, 1)}
CONNECTIVITIES = tuple(sorted(_STRUCTURES))


def keep_largest_component(
    labels: np.ndarray, classes: Iterable[int], connectivity: int = 26
) -> np.ndarray:
    """A copy of ``labels`` where each of ``classes`` keeps only its largest component.

    Voxels of a class outside its largest connected component become background (0). Ties
    keep the component ``scipy.ndimage.label`` numbers first.

    Args:
        labels: ``(x, y, z)`` integer label map.
        classes: foreground class values to clean (0 is refused: background is not a structure).
        connectivity: 26 (faces, edges, corners), 18 (faces, edges) or 6 (faces).
    """
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    out = labels.copy()
    for cls in classes:
        if int(cls) == 0:
            raise ValueError("keep_largest_component: class 0 is background, not a structure")
        components, count = ndimage.label(labels == cls, structure=_STRUCTURES[connectivity])
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0  # not part of the class
        out[(components != 0) & (components != sizes.argmax())] = 0
    return out
