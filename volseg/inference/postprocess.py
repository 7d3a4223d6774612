"""Label-map post-processing: keep the largest connected component of the foreground as a
whole, of chosen classes, or both (nnU-Net's post-processing, Isensee et al. 2021)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
        mask = labels == cls
        out[mask & ~largest_part(mask, connectivity)] = 0
    return out


def largest_part(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of a boolean ``mask`` (ties: the first ``scipy.ndimage
    .label`` numbers); ``mask`` itself when it has one component or none."""
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    components, count = ndimage.label(mask, structure=_STRUCTURES[connectivity])
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def keep_largest_foreground(labels: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """A copy of ``labels`` where every foreground voxel outside the largest connected component
    of the foreground (all classes together) becomes background.

    A lesion inside its organ is part of the organ's component and stays; a speck away from
    both goes. nnU-Net tries this first, before any class on its own.
    """
    return np.where(largest_part(labels > 0, connectivity), labels, 0).astype(labels.dtype)


def apply_postprocessing(labels: np.ndarray, choice: Mapping) -> np.ndarray:
    """``labels`` post-processed as ``choice`` says: a mapping with ``largest_foreground``
    (bool), ``largest_component`` (class values) and ``connectivity`` (26, 18 or 6), as
    `volseg.engine.postprocessing_selector.PostprocessingSelector` chooses it."""
    connectivity = int(choice.get("connectivity", 26))
    if choice.get("largest_foreground"):
        labels = keep_largest_foreground(labels, connectivity)
    classes = list(choice.get("largest_component") or [])
    if classes:
        labels = keep_largest_component(labels, classes, connectivity)
    return labels


def describe_postprocessing(choice: Mapping, class_names: list[str] | None = None) -> str:
    """One line for the log: what ``choice`` (see `apply_postprocessing`) does."""
    steps = ["keep the largest foreground component"] if choice.get("largest_foreground") else []
    classes = list(choice.get("largest_component") or [])
    if classes:
        names = [class_names[c] if class_names and c < len(class_names) else str(c)
                 for c in classes]
        steps.append(f"keep the largest component of {', '.join(names)}")
    return "; ".join(steps) if steps else "none"
