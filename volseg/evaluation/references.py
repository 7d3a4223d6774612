"""The references predictions are scored against: a flat folder of label files, a dataset root
of a known layout, or a data config's cases, each read as training reads it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from volseg.inference.inputs import InputCase
from volseg.io import Volume, read_volume
from volseg.io.names import volume_files


@dataclass
class Reference:
    """A case's reference labels: a file, or a dataset layout's reader."""

    name: str  # what names the reference in messages and reports
    read: Callable[[], Volume]


def dataset_references(cases: Sequence[InputCase]) -> dict[str, Reference]:
    """References of a dataset's cases (`volseg.inference.inputs.dataset_cases`), read by its
    layout; cases without labels are left out."""
    return {c.case_id: Reference(f"the label of case {c.case_id} ({c.source})", c.label_reader)
            for c in cases if c.label_reader is not None}


def references_under(gt: str | Path, num_classes: int | None = None) -> dict[str, Reference]:
    """References under ``gt``: a flat folder of label files, or a dataset root whose layout
    `detect_layout` recognises (read with that layout's default settings).

    Raises:
        FileNotFoundError: ``gt`` is missing, or holds no reference files.
        ValueError: the recognised layout has another number of classes than the predictions
            (say which data config to use instead).
    """
    from volseg.data.adapters.detect import detect_layout

    gt = Path(gt)
    if not gt.is_dir():
        raise FileNotFoundError(f"gt={gt}: no such folder")
    layout = detect_layout(gt)
    if layout is not None:
        names = layout.class_names
        if num_classes is not None and names is not None and len(names) != num_classes:
            raise ValueError(
                f"gt={gt} is a {type(layout).__name__} dataset whose default settings give "
                f"{len(names)} classes {names}, the predictions {num_classes}: pass its data "
                f"config with the settings used in training (data=<name> data.root={gt} ...) "
                "instead of gt")
        cases = [InputCase(c.case_id, list(c.image_paths),
                           label_reader=lambda c=c: layout.read_label(c))
                 for c in layout.list_cases() if c.label_path is not None]
        found = dataset_references(cases)
    else:
        found = {case: Reference(str(path), lambda path=path: read_volume(path))
                 for case, path in volume_files(gt).items()}
    if not found:
        raise FileNotFoundError(f"no reference files found under {gt} (gt): label files named "
                                "as the predictions, or a dataset root of a known layout")
    return found
