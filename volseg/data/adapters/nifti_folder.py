"""A plain folder of NIfTI images and labels paired by file name.

```
<root>/images/<name>.nii.gz     3D, or 4D (x, y, z, C) with every channel in one file
<root>/labels/<name>.nii.gz     3D integer label map on the image's grid
```
``.nii`` works as well as ``.nii.gz``. This is how many pipelines store data after their own
preprocessing, e.g. the 2-channel, 5-class volumes of the 3D ResNet-50 segmentation pipeline
(``preprocessed_3d_data/images`` + ``labels``).
"""

from __future__ import annotations

from pathlib import Path

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.adapters.files import pair_by_name, read_image_files
from volseg.io import Volume
from volseg.io.names import files_by_name


class NiftiFolderLayout(DatasetLayout):
    """Cases from ``images/`` and ``labels/`` folders whose file names match one to one.

    Args:
        root: the folder holding the two subfolders.
        images: image subfolder name.
        labels: label subfolder name.
        channels: channels every image must have (``None``: not checked); a 4D file with
            another count is an error naming it, before it reaches the network.
    """

    def __init__(
        self, root: str | Path, images: str = "images", labels: str = "labels",
        channels: int | None = None,
    ) -> None:
        super().__init__(root)
        self.images_dir = self.root / images
        self.labels_dir = self.root / labels
        self.channels = channels

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "images").is_dir() and (root / "labels").is_dir()

    def list_cases(self) -> list[Case]:
        pairs = pair_by_name(files_by_name(self.images_dir), files_by_name(self.labels_dir))
        if not pairs:
            raise FileNotFoundError(f"{self.images_dir}: no .nii.gz or .nii images")
        return [Case(name, (image,), label) for name, image, label in pairs]

    def read_image(self, case: Case) -> Volume:
        return read_image_files(case.image_paths, self.channels)
