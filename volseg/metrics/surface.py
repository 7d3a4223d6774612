"""Surface-distance metrics per case and class, in millimetres: HD, HD95, ASSD, surface Dice.

The surface of a mask is its voxels with at least one face neighbour (6-connectivity) outside
the mask; voxels on the image border count as surface, as if the image were padded with
background. This is the definition of MONAI's ``get_mask_edges`` (binary erosion XOR mask) and
of SimpleITK's label contour. A distance is the Euclidean distance in mm between voxel centres,
``spacing`` giving the voxel size along each array axis.

For one class, ``d_PT`` holds the distance from every surface voxel of the prediction to the
nearest surface voxel of the target, and ``d_TP`` the reverse. Then:

- Hausdorff distance (HD): ``max(max d_PT, max d_TP)``.
- HD95 (``percentile=95``): ``max(P95(d_PT), P95(d_TP))``, the larger of the two directed 95th
  percentiles, as MONAI's ``compute_hausdorff_distance``. ``pooled=True`` takes the percentile of
  both sets pooled together instead, as medpy's ``hd95`` does; it is never larger.
  Percentiles interpolate linearly between order statistics (NumPy's default).
- Average symmetric surface distance (ASSD): ``(sum d_PT + sum d_TP) / (|d_PT| + |d_TP|)``
  (Heimann et al. 2009), MONAI's ``symmetric=True``. ``symmetric=False`` gives ``mean d_PT``.
- Normalised surface Dice at a tolerance ``tau`` mm (Nikolov et al. 2021, counted per surface
  voxel as MONAI's ``compute_surface_dice`` without sub-voxel areas):
  ``(#{d_PT <= tau} + #{d_TP <= tau}) / (|d_PT| + |d_TP|)``.

Empty-mask conventions, the same as the overlap metrics:

- class in neither prediction nor target: NaN for every metric by default (undefined; means
  skip it); ``both_empty`` gives another value, e.g. 0 mm for distances and 1 for surface Dice
  (:data:`BOTH_EMPTY_PERFECT`);
- class in exactly one of them: HD, HD95 and ASSD are ``inf`` (no surface to reach), surface
  Dice is 0. The accumulating :mod:`volseg.metrics.accumulators` classes replace ``inf`` by a
  finite penalty so a mean stays informative.

MONAI 1.6's ``HausdorffDistanceMetric``, ``SurfaceDistanceMetric`` and ``SurfaceDiceMetric``
give the same values (NaN in neither; ``inf``, ``inf`` and 0 in exactly one), with one
exception: its HD95 (``percentile=95``) is NaN, not ``inf``, when exactly one mask is empty
(``torch.quantile`` of infinite distances).

Distances come from a KD-tree over the target's surface voxels, queried only with the
prediction's surface voxels that are not on the target's surface (the others are at 0 mm), all
inside the bounding box of both masks: surfaces are sparse, so this does far less work than a
distance transform of the whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from volseg.metrics.masks import paired_masks

Spacing = Sequence[float] | Sequence[Sequence[float]] | None

# ``surface_metrics(..., both_empty=BOTH_EMPTY_PERFECT)`` scores a class in neither mask as a
# perfect match, the "both empty = 1" convention: no distance and full surface agreement.
BOTH_EMPTY_PERFECT: Mapping[str, float] = MappingProxyType(
    {"hausdorff": 0.0, "hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every ``True`` voxel, or ``None`` if there is none."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    centre = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for start, stop in ((0, -2), (2, None)):
            shifted = list(centre)
            shifted[axis] = slice(start, stop)
            interior &= padded[tuple(shifted)]
    return mask & ~interior


def _surface_points(surface: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (C order) and mm coordinates of the ``True`` voxels of ``surface``."""
    # flatnonzero + unravel_index is several times faster than argwhere on a large volume.
    flat = np.flatnonzero(surface)
    return flat, np.stack(np.unravel_index(flat, surface.shape), axis=1) * scale


def _directed(
    source_flat: np.ndarray, source_points: np.ndarray, target: np.ndarray, target_tree: cKDTree
) -> np.ndarray:
    """Distance (mm) from every source surface point to the nearest ``target`` surface voxel."""
    distances = np.zeros(len(source_flat), dtype=np.float64)
    # Voxels on both surfaces are at distance 0: only the rest need the tree.
    away = ~target.ravel()[source_flat]
    if away.any():
        distances[away] = target_tree.query(source_points[away], k=1, workers=-1)[0]
    return distances


def surface_distances(
    pred: np.ndarray | Tensor, target: np.ndarray | Tensor, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances of two binary masks, ``(d_PT, d_TP)`` in mm.

    Args:
        pred: predicted binary mask, any number of spatial axes.
        target: reference binary mask, same shape.
        spacing: voxel size along each axis in mm; ``None`` for 1 mm.

    Returns:
        ``d_PT`` (one float64 per surface voxel of ``pred``, in C order) and ``d_TP``. An empty
        mask has no surface voxels; if the other one is not empty, the distances from it are
        ``inf``.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    scale = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if scale.shape != (pred.ndim,) or not (scale > 0).all():
        raise ValueError(
            f"spacing must hold {pred.ndim} positive voxel sizes in mm, got {list(spacing)}"
        )
    box = _bounding_box(pred | target)
    if box is None:
        return np.zeros(0), np.zeros(0)
    pred_surface = _surface(pred[box])
    target_surface = _surface(target[box])
    if not pred_surface.any() or not target_surface.any():
        return (
            np.full(int(pred_surface.sum()), np.inf),
            np.full(int(target_surface.sum()), np.inf),
        )
    # The box offset shifts every point equally, so distances need no correction for it.
    pred_flat, pred_points = _surface_points(pred_surface, scale)
    target_flat, target_points = _surface_points(target_surface, scale)
    # A larger leaf than the default 16 builds faster, and each tree serves one batched query.
    pred_tree = cKDTree(pred_points, leafsize=32)
    target_tree = cKDTree(target_points, leafsize=32)
    return (
        _directed(pred_flat, pred_points, target_surface, target_tree),
        _directed(target_flat, target_points, pred_surface, pred_tree),
    )


# A reduction of one case and class's ``(d_PT, d_TP, column)`` to a number, and its value
# when exactly one of the two masks is empty.
Reduction = tuple[Callable[[np.ndarray, np.ndarray, int], float], float]


def _percentile(distances: np.ndarray, percentile: float | None) -> float:
    if percentile is None:
        return float(distances.max())
    return float(np.percentile(distances, percentile))


def hausdorff_reduction(percentile: float | None, pooled: bool) -> Reduction:
    """HD (``percentile=None``) or a percentile HD of one case and class's distances."""
    if percentile is not None and not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100] or None, got {percentile}")

    def reduce(d_pt: np.ndarray, d_tp: np.ndarray, column: int) -> float:
        if pooled:
            return _percentile(np.concatenate([d_pt, d_tp]), percentile)
        return max(_percentile(d_pt, percentile), _percentile(d_tp, percentile))

    return reduce, np.inf


def average_reduction(symmetric: bool) -> Reduction:
    """ASSD (``symmetric``) or the mean distance from the prediction's surface."""
    def reduce(d_pt: np.ndarray, d_tp: np.ndarray, column: int) -> float:
        if not symmetric:
            return float(d_pt.mean())
        return float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))

    return reduce, np.inf


def check_tolerances(tolerance_mm: float | Sequence[float], num_columns: int) -> np.ndarray:
    """Surface Dice tolerances in mm, one per scored class, from one value or one per class.

    Raises:
        ValueError: on a NaN, infinite or negative value, or a count that is neither 1 nor
            ``num_columns``.
    """
    tolerances = np.asarray(tolerance_mm, dtype=np.float64)
    if tolerances.ndim > 1 or tolerances.size not in (1, num_columns):
        raise ValueError(
            f"tolerance_mm must be one value or one per scored class ({num_columns}), "
            f"got {tolerance_mm}"
        )
    # ``d <= nan`` is always False, so a NaN tolerance would silently score every case 0.
    if not (np.isfinite(tolerances) & (tolerances >= 0)).all():
        raise ValueError(f"tolerance_mm must be finite and >= 0 mm, got {tolerance_mm}")
    return np.broadcast_to(tolerances, (num_columns,))


def surface_dice_reduction(tolerance_mm: float | Sequence[float], num_columns: int) -> Reduction:
    """Surface Dice at ``tolerance_mm`` (one value, or one per scored class)."""
    tolerances = check_tolerances(tolerance_mm, num_columns)

    def reduce(d_pt: np.ndarray, d_tp: np.ndarray, column: int) -> float:
        tau = tolerances[column]
        within = np.count_nonzero(d_pt <= tau) + np.count_nonzero(d_tp <= tau)
        return within / (d_pt.size + d_tp.size)

    return reduce, 0.0


def _case_spacings(spacing: Spacing, num_cases: int, ndim: int) -> list[Sequence[float] | None]:
    """One spacing per case from ``None``, one spacing for all, or one per case."""
    if spacing is None:
        return [None] * num_cases
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape == (ndim,):
        return [values] * num_cases
    if values.shape == (num_cases, ndim):
        return list(values)
    raise ValueError(
        f"spacing must be {ndim} voxel sizes in mm or one such row per case "
        f"({num_cases} x {ndim}), got shape {values.shape}"
    )


def _num_columns(
    pred: Tensor | np.ndarray, num_classes: int | None, include_background: bool
) -> int:
    """How many classes are scored: C, less background unless it is included."""
    if num_classes is None:
        shape = torch.as_tensor(pred).shape
        if len(shape) != 5:
            raise ValueError("num_classes is required when pred is a label map, not one-hot")
        num_classes = shape[1]
    return num_classes if include_background else num_classes - 1


def per_class_surface_values(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    spacing: Spacing,
    num_classes: int | None,
    include_background: bool,
    reductions: dict[str, Reduction],
    both_empty: Mapping[str, float],
) -> dict[str, Tensor]:
    """Each named reduction per case and kept class, ``(N, K)`` float32, from one
    `surface_distances` per case and class; ``both_empty[name]`` (NaN if absent) where the class
    is in neither mask. The functions below, and the accumulators that score several surface
    metrics of one batch (`volseg.metrics.accumulators.update_surface_metrics`), all go
    through here."""
    if num_classes is None:
        num_classes = _num_columns(pred, None, include_background=True)
    p, t = paired_masks(pred, target, num_classes, include_background)
    p, t = p.cpu().numpy(), t.cpu().numpy()
    spacings = _case_spacings(spacing, p.shape[0], p.ndim - 2)
    values = {name: np.full(p.shape[:2], both_empty.get(name, math.nan)) for name in reductions}
    for case, column in np.ndindex(*p.shape[:2]):
        d_pt, d_tp = surface_distances(p[case, column], t[case, column], spacings[case])
        if d_pt.size + d_tp.size == 0:
            continue  # in neither mask: keeps the both_empty value
        one_empty = d_pt.size == 0 or d_tp.size == 0
        for name, (reduce, empty_value) in reductions.items():
            values[name][case, column] = empty_value if one_empty else reduce(d_pt, d_tp, column)
    return {name: torch.from_numpy(v).float() for name, v in values.items()}


def surface_metrics(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    spacing: Spacing,
    tolerance_mm: float | Sequence[float],
    *,
    num_classes: int | None = None,
    include_background: bool = False,
    both_empty: float | Mapping[str, float] = math.nan,
) -> dict[str, Tensor]:
    """HD, HD95, ASSD and surface Dice from one distance computation per case and class.

    Arguments as :func:`hausdorff_distance` and :func:`surface_dice`, except ``both_empty``:
    the value for a class in neither mask, one number for all four metrics, or a mapping from
    metric name to value (a metric left out stays NaN). :data:`BOTH_EMPTY_PERFECT` is the
    "both empty = 1" convention: 0 mm for the distances and 1 for surface Dice.

    Returns:
        A dict with keys ``hausdorff``, ``hd95``, ``assd`` and ``surface_dice``, each
        ``(N, K)``.

    Raises:
        ValueError: on a ``both_empty`` key that is not a metric name, and as
            :func:`surface_dice`.
    """
    reductions = {
        "hausdorff": hausdorff_reduction(None, pooled=False),
        "hd95": hausdorff_reduction(95.0, pooled=False),
        "assd": average_reduction(symmetric=True),
        "surface_dice": surface_dice_reduction(
            tolerance_mm, _num_columns(pred, num_classes, include_background)
        ),
    }
    if isinstance(both_empty, Mapping):
        unknown = set(both_empty) - set(reductions)
        if unknown:
            raise ValueError(
                f"both_empty keys must be among {sorted(reductions)}, got {sorted(unknown)}"
            )
        fill = {name: float(value) for name, value in both_empty.items()}
    else:
        fill = dict.fromkeys(reductions, float(both_empty))
    return per_class_surface_values(pred, target, spacing, num_classes, include_background,
                                    reductions, fill)


def hausdorff_distance(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    spacing: Spacing = None,
    percentile: float | None = None,
    *,
    pooled: bool = False,
    num_classes: int | None = None,
    include_background: bool = False,
    both_empty: float = math.nan,
) -> Tensor:
    """Hausdorff distance (``percentile=None``) or HD95 (``percentile=95``) in mm, ``(N, K)``.

    Args:
        pred: predicted labels ``(N, X, Y, Z)`` / ``(X, Y, Z)``, or one-hot ``(N, C, X, Y, Z)``.
        target: reference labels, same forms.
        spacing: voxel size per array axis in mm, for all cases or one row per case;
            ``None`` for 1 mm.
        percentile: in [0, 100]; ``None`` for the maximum.
        pooled: percentile of both directions pooled (medpy) instead of the larger of the two
            directed percentiles (MONAI).
        num_classes: C including background; required for label maps.
        include_background: keep class 0 as column 0.
        both_empty: value for a class in neither mask: NaN (undefined, the default) or e.g.
            0.0 mm to count it as a perfect match.
    """
    reduction = {"hd": hausdorff_reduction(percentile, pooled)}
    fill = {"hd": both_empty}
    values = per_class_surface_values(pred, target, spacing, num_classes, include_background,
                                      reduction, fill)
    return values["hd"]


def average_surface_distance(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    spacing: Spacing = None,
    *,
    symmetric: bool = True,
    num_classes: int | None = None,
    include_background: bool = False,
    both_empty: float = math.nan,
) -> Tensor:
    """Average symmetric surface distance in mm, ``(N, K)``; ``symmetric=False`` gives the
    mean distance from the prediction's surface to the target's. Other arguments as
    :func:`hausdorff_distance`."""
    reduction = {"asd": average_reduction(symmetric)}
    fill = {"asd": both_empty}
    values = per_class_surface_values(pred, target, spacing, num_classes, include_background,
                                      reduction, fill)
    return values["asd"]


def surface_dice(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    spacing: Spacing,
    tolerance_mm: float | Sequence[float],
    *,
    num_classes: int | None = None,
    include_background: bool = False,
    both_empty: float = math.nan,
) -> Tensor:
    """Normalised surface Dice at ``tolerance_mm`` (one value, or one per kept class), ``(N, K)``.

    Other arguments as :func:`hausdorff_distance`; ``both_empty=1.0`` counts a class in
    neither mask as a perfect match.

    Raises:
        ValueError: on a NaN, infinite or negative tolerance, or a tolerance count that is
            neither 1 nor the number of scored classes.
    """
    num_columns = _num_columns(pred, num_classes, include_background)
    reduction = {"nsd": surface_dice_reduction(tolerance_mm, num_columns)}
    fill = {"nsd": both_empty}
    values = per_class_surface_values(pred, target, spacing, num_classes, include_background,
                                      reduction, fill)
    return values["nsd"]
