"""KiTS23 (2023 Kidney and Kidney Tumor Segmentation Challenge; Heller et al.): one folder a case.

```
<root>/dataset/case_00000/imaging.nii.gz        CT in HU
<root>/dataset/case_00000/segmentation.nii.gz   0 background, 1 kidney, 2 tumor, 3 cyst
...
```
The case folders may also sit directly under ``<root>`` (copies made without the repository's
``dataset/`` folder); ``.nii`` files are accepted as well as ``.nii.gz`` (some pipelines
decompress them once to halve read time). KiTS23 arrays are ``(slices, rows, columns)``: the
first file axis is the patient's long axis, and volseg keeps the file's axis order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.adapters.files import find_file
from volseg.io import Volume

CYST = 3


class KiTS23Layout(DatasetLayout):
    """KiTS23 case folders, with the cyst label kept or merged into background.

    Args:
        root: the KiTS23 folder (holding ``dataset/case_*`` or ``case_*`` directly).
        drop_cyst: relabel cysts (3) as background, leaving background, kidney and tumor, as
            the 3-class ResNet-18 U-Net replication does to focus on the kidney/tumor
            boundary. ``False`` keeps the challenge's four classes.
    """

    channel_names = ["CT"]

    def __init__(self, root: str | Path, drop_cyst: bool = True) -> None:
        super().__init__(root)
        self.drop_cyst = drop_cyst

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        names = ["background", "kidney", "tumor", "cyst"]
        return names[:CYST] if self.drop_cyst else names

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return any(any(folder.glob("case_*/segmentation.nii*")) for folder in (root / "dataset",
                                                                                root))

    def _case_folders(self) -> list[Path]:
        for folder in (self.root / "dataset", self.root):
            cases = sorted(p for p in folder.glob("case_*") if p.is_dir())
            if cases:
                return cases
        raise FileNotFoundError(
            f"{self.root}: no case_* folders in {self.root / 'dataset'} or {self.root} "
            "(KiTS23 layout)"
        )

    def list_cases(self) -> list[Case]:
        return [
            Case(folder.name, (find_file(folder, "imaging"),), find_file(folder, "segmentation"))
            for folder in self._case_folders()
        ]

    def read_label(self, case: Case) -> Volume:
        label = super().read_label(case)
        if not self.drop_cyst:
            return label
        return label.with_array(np.where(label.array == CYST, 0, label.array))
