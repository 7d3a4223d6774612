"""The nnU-Net / Medical Segmentation Decathlon raw layout.

```
<root>/dataset.json
<root>/imagesTr/<case>_0000.nii.gz   one file per channel: _0000, _0001, ...
<root>/labelsTr/<case>.nii.gz
```
`dataset.json` as nnU-Net v2 writes it: ``channel_names`` ({"0": "CT"}), ``labels``
({"background": 0, "organ": 1}) and ``file_ending``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from volseg.data.adapters.base import Case, DatasetLayout

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class DecathlonLayout(DatasetLayout):
    """Cases of an nnU-Net v2 raw dataset: ``imagesTr`` + ``labelsTr`` + ``dataset.json``."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._meta: dict | None = None

    @property
    def meta(self) -> dict:
        if self._meta is None:
            path = self.root / "dataset.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing (data.root must hold a dataset.json)")
            try:
                self._meta = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from None
        return self._meta

    @property
    def file_ending(self) -> str:
        return self.meta.get("file_ending", ".nii.gz")

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        labels = self.meta.get("labels", {})
        by_value = {int(value): name for name, value in labels.items()}
        if sorted(by_value) != list(range(len(by_value))):
            raise ValueError(
                f"{self.root / 'dataset.json'}: labels must be 0..K-1, got {sorted(by_value)}"
            )
        return [by_value[v] for v in range(len(by_value))]

    @property
    def channel_names(self) -> list[str]:  # type: ignore[override]
        channels = self.meta.get("channel_names", self.meta.get("modality", {}))
        return [channels[k] for k in sorted(channels, key=int)]

    def list_cases(self) -> list[Case]:
        ending = self.file_ending  # reads dataset.json first: it defines the rest
        images_dir, labels_dir = self.root / "imagesTr", self.root / "labelsTr"
        if not images_dir.is_dir():
            raise FileNotFoundError(f"{images_dir}: missing (expected the nnU-Net raw layout)")
        channels: dict[str, dict[int, Path]] = defaultdict(dict)
        for path in sorted(images_dir.glob(f"*{ending}")):
            match = _CHANNEL_FILE.match(path.name[: -len(ending)])
            if match is None:
                raise ValueError(f"{path}: image names must end in _0000{ending}, _0001{ending}...")
            channels[match["case"]][int(match["channel"])] = path
        expected = list(range(len(self.channel_names) or 1))
        cases = []
        for case_id, files in sorted(channels.items()):
            if sorted(files) != expected:
                raise ValueError(
                    f"{images_dir}: case {case_id} has channels {sorted(files)}, "
                    f"dataset.json names {len(expected)}"
                )
            label = labels_dir / f"{case_id}{ending}"
            if not label.is_file():
                raise FileNotFoundError(f"{label}: missing label for case {case_id}")
            cases.append(Case(case_id, tuple(files[c] for c in expected), label))
        if not cases:
            raise FileNotFoundError(f"{images_dir}: no *{ending} images")
        return cases
