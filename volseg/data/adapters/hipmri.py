"""HipMRI Study: weekly pelvic MR of prostate radiotherapy patients (Dowling & Greer, CSIRO 2021).

"Labelled weekly MR images of the male pelvis", https://doi.org/10.25919/45t8-p065:
```
<root>/semantic_MRs_anon/Case_004_Week0_LFOV.nii.gz
<root>/semantic_labels_anon/Case_004_Week0_SEMANTIC_LFOV.nii.gz
```
(or both folders inside ``<root>/HipMRI_study_complete_release_v1/``, as the CSIRO archive
unpacks). Labels: 0 background, 1 body, 2 bone, 3 bladder, 4 rectum, 5 prostate. A patient has
up to eight weekly scans; they form one group, so a patient never straddles two splits. One
scan of the release has a different size from the rest: nothing here assumes a shape.
"""

from __future__ import annotations

import re
from pathlib import Path

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.adapters.files import pair_by_name
from volseg.io.names import files_by_name

IMAGES = "semantic_MRs_anon"
LABELS = "semantic_labels_anon"
RELEASE = "HipMRI_study_complete_release_v1"
_NAME = re.compile(r"^(?P<patient>Case_\d+)_Week\d+_LFOV$")


class HipMRILayout(DatasetLayout):
    """HipMRI MR volumes paired with their semantic labels, grouped by patient.

    Args:
        root: the folder holding ``semantic_MRs_anon`` and ``semantic_labels_anon`` (directly
            or inside ``HipMRI_study_complete_release_v1``).
    """

    class_names = ["background", "body", "bone", "bladder", "rectum", "prostate"]
    channel_names = ["MR"]

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / LABELS).is_dir() or (root / RELEASE / LABELS).is_dir()

    def _base(self) -> Path:
        release = self.root / RELEASE
        return release if (release / IMAGES).is_dir() else self.root

    def list_cases(self) -> list[Case]:
        base = self._base()
        images = files_by_name(base / IMAGES)
        # Case_004_Week0_SEMANTIC_LFOV labels Case_004_Week0_LFOV.
        labels = files_by_name(base / LABELS, key=lambda stem: stem.replace("_SEMANTIC", ""))
        cases = []
        for name, image, label in pair_by_name(images, labels):
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f"{image}: expected a Case_XXX_WeekY_LFOV name")
            cases.append(Case(name, (image,), label, group=match["patient"]))
        if not cases:
            raise FileNotFoundError(f"{base / IMAGES}: no NIfTI volumes")
        return cases
