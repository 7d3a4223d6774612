"""Whether a case can be trained on: the checks the cache build and ``volseg verify`` run.

Each problem is one `CaseProblem`, one line that starts with the file at fault: a missing or
unreadable file (a truncated NIfTI included), the wrong number of image channels, a label grid
that differs from its image's, label values outside the classes, NaN/inf voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.io import Volume, nifti_findings

# What can be wrong with a case, in the order `volseg verify` reports them.
PROBLEM_KINDS = ("dataset", "missing", "unreadable", "channels", "geometry", "labels",
                 "non-finite")
# Label values listed in a message at most (a float label map can hold millions).
_MAX_VALUES_SHOWN = 10


@dataclass(frozen=True)
class CaseProblem:
    """One reason a case (or the whole dataset) cannot be trained on.

    Attributes:
        case_id: the case, or ``""`` for the dataset as a whole (its listing failed).
        kind: one of `PROBLEM_KINDS`.
        message: one line that starts with the file at fault.
    """

    case_id: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


class BadCasesError(ValueError):
    """Cases failed their checks; the message lists every problem, one line each."""

    def __init__(self, problems: Sequence[CaseProblem]) -> None:
        self.problems = list(problems)
        cases = len({p.case_id for p in self.problems})
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{cases} case(s) failed their checks; fix them, or set data.skip_bad_cases=true "
            f"to train without them (volseg verify lists them too):\n{lines}"
        )


@dataclass
class CheckedCase:
    """A case as read from disk, and what is wrong with it (nothing when ``problems`` is empty)."""

    image: Volume | None
    label: Volume | None
    problems: list[CaseProblem]


def check_case(
    layout: DatasetLayout, case: Case, num_classes: int, in_channels: int | None = None,
    ignore_index: int | None = None,
) -> CheckedCase:
    """Read one case and check that it can be trained on.

    Checks, each reported as a `CaseProblem` naming the file: a file is missing or unreadable
    (including a NIfTI file shorter than its header says, see `nifti_findings`), the image has
    other than ``in_channels`` channels, the label grid differs from the image's (shape,
    spacing, origin, direction), label values lie outside ``0..num_classes-1`` (other than
    ``ignore_index``, the label of unannotated voxels), and NaN/inf voxels. A case is fit for
    training when the returned ``problems`` is empty.
    """
    problems: list[CaseProblem] = []

    def report(kind: str, message: str) -> None:
        problems.append(CaseProblem(case.case_id, kind, message))

    image = _read(case, case.image_paths, layout.read_image, report)
    if case.label_path is None:
        report("missing", f"{case.image_paths[0]}: case {case.case_id} has no label file")
        label = None
    else:
        label = _read(case, (case.label_path,), layout.read_label, report)
    if image is not None:
        _check_image(image, case, in_channels, report)
    if label is not None:
        _check_label(label, image, case.label_path, num_classes, report, ignore_index)
    return CheckedCase(image, label, problems)


def case_problems(
    layout: DatasetLayout, case: Case, num_classes: int, in_channels: int | None = None,
    ignore_index: int | None = None,
) -> list[CaseProblem]:
    """`check_case` without the volumes: cheap to send back from a worker process."""
    return check_case(layout, case, num_classes, in_channels, ignore_index).problems


def _read(
    case: Case, paths: Sequence[Path], read: Callable[[Case], Volume],
    report: Callable[[str, str], None],
) -> Volume | None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        report("missing", f"{missing[0]}: no such file")
        return None
    findings = [finding for path in paths for finding in nifti_findings(path)]
    for kind, message in findings:
        report(kind, message)
    if any(kind == "unreadable" for kind, _ in findings):
        return None
    try:
        return read(case)
    except (OSError, ValueError) as error:  # VolumeReadError is a ValueError naming the file
        named = any(str(p) in str(error) for p in paths)
        report("unreadable", str(error) if named else f"{paths[0]}: {error}")
        return None


def _check_image(
    image: Volume, case: Case, in_channels: int | None, report: Callable[[str, str], None]
) -> None:
    channels = image.array if image.array.ndim == 4 else image.array[None]
    if in_channels is not None and len(channels) != in_channels:
        report("channels", f"{case.image_paths[0]}: {len(channels)} channel(s), "
                           f"data.in_channels={in_channels}")
    if not np.issubdtype(channels.dtype, np.floating):
        return  # integer voxels are always finite
    one_file_each = len(case.image_paths) == len(channels)
    for index, channel in enumerate(channels):
        bad = channel.size - int(np.count_nonzero(np.isfinite(channel)))
        if bad:
            path = case.image_paths[index if one_file_each else 0]
            where = "" if one_file_each else f" in channel {index}"
            report("non-finite", f"{path}: {bad} NaN/inf voxel(s){where}")


def _check_label(
    label: Volume, image: Volume | None, path: Path, num_classes: int,
    report: Callable[[str, str], None], ignore_index: int | None = None,
) -> None:
    if image is not None:
        mismatch = image.geometry_mismatch(label)
        if mismatch:
            report("geometry", f"{path}: label grid differs from its image: {mismatch}")
    values = label.array
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            report("non-finite", f"{path}: {values.size - int(finite.sum())} NaN/inf voxel(s)")
            values = values[finite]
        if values.size and not np.array_equal(values, np.round(values)):
            report("labels", f"{path}: label values are not whole numbers")
            return
    if ignore_index is not None:
        values = values[values != ignore_index]
    # min/max first: np.unique sorts the whole volume, needed only to describe a failure.
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        shown = np.unique(values)
        listed = ", ".join(f"{v:g}" for v in shown[:_MAX_VALUES_SHOWN].tolist())
        more = ", ..." if shown.size > _MAX_VALUES_SHOWN else ""
        report("labels", f"{path}: label values [{listed}{more}] outside "
                         f"0..{num_classes - 1} (data.num_classes={num_classes})")
