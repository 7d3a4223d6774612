"""What a dataset adapter provides: the list of cases in its on-disk layout.

An adapter knows only its layout. Everything after "list the cases" (preprocessing, caching,
splits, sampling) is shared by `volseg.data.SegmentationDataModule`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from volseg.io import Volume, read_channels, read_volume


@dataclass(frozen=True)
class Case:
    """One case: its image file per channel and its label file.

    Attributes:
        case_id: unique name, used for cache files, splits and prediction file names.
        image_paths: one file per input channel, in channel order.
        label_path: the label map, or ``None`` for unlabeled cases.
        group: cases of one group (a patient's several scans) always land in the same split.
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None = None
    group: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


class DatasetLayout:
    """Base adapter: subclasses implement `list_cases`; reading defaults to one file per item."""

    #: Class names in label order when the layout's metadata says them, else ``None``.
    class_names: list[str] | None = None
    #: Channel names when the layout's metadata says them, else ``None``.
    channel_names: list[str] | None = None

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def recognises(cls, root: Path) -> bool:
        """Whether ``root`` has this layout's structure (`volseg.data.adapters.detect`)."""
        return False

    def prepare(self) -> None:
        """Make the dataset available on disk (a no-op for real data)."""

    def list_cases(self) -> list[Case]:
        raise NotImplementedError

    def read_image(self, case: Case) -> Volume:
        """The ``(C, x, y, z)`` image in its original geometry."""
        return read_channels(case.image_paths)

    def read_label(self, case: Case) -> Volume:
        """The ``(x, y, z)`` integer label map in its original geometry."""
        if case.label_path is None:
            raise ValueError(f"case {case.case_id} has no label")
        return read_volume(case.label_path)
