"""The Medical Segmentation Decathlon and nnU-Net raw layouts (one ``dataset.json`` folder).

Three generations of one layout are read:

- nnU-Net v2 (Isensee et al. 2021): one file per channel, listed by name, and a
  ``dataset.json`` with ``channel_names`` ({"0": "CT"}), ``labels`` by name ({"background": 0,
  "organ": 1}) and ``file_ending``::

      <root>/imagesTr/<case>_0000.nii.gz, <case>_0001.nii.gz, ...
      <root>/labelsTr/<case>.nii.gz

- The original Medical Segmentation Decathlon (Antonelli et al., Nat. Commun. 2022): one file
  per case holding every channel (4D ``(x, y, z, C)`` for multi-modal tasks), listed in
  ``dataset.json``'s ``training`` entries, with ``modality`` ({"0": "FLAIR", ...}) and
  ``labels`` by value ({"0": "background", "1": "edema"})::

      <root>/imagesTr/BRATS_001.nii.gz       "image": "./imagesTr/BRATS_001.nii.gz"
      <root>/labelsTr/BRATS_001.nii.gz       "label": "./labelsTr/BRATS_001.nii.gz"

- nnU-Net v1: the Decathlon's ``dataset.json``, but each listed image stored as per-channel
  ``<case>_0000.nii.gz`` files; a listed image that is not on disk is looked for that way.

Listing from ``training`` also skips the ``._*`` macOS files the Decathlon tarballs carry.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.adapters.files import read_image_files
from volseg.io import Volume
from volseg.io.names import strip_ending

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# The fix for a missing or unreadable dataset.json, in every error about it.
_SET_ROOT = "set data.root=<task folder> (the folder holding dataset.json, imagesTr/, labelsTr/)"
#: The settings `dataset_json_setting` reads off a dataset.json.
DATASET_JSON_SETTINGS = ("num_classes", "in_channels", "class_names")


def class_names_from_labels(labels: dict, path: Path) -> list[str]:
    """Class names in label order from either ``labels`` convention of ``dataset.json``.

    The Decathlon (and nnU-Net v1) map values to names, ``{"0": "background"}``; nnU-Net v2
    maps names to values, ``{"background": 0}``. String values mean the former.

    Raises:
        ValueError: values are not 0..K-1, or are nnU-Net v2 regions (lists of labels).
    """
    if all(isinstance(v, str) for v in labels.values()):
        pairs = list(labels.items())
    else:
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise ValueError(f"{path}: region-based labels (lists of values) are not supported")
        pairs = [(value, name) for name, value in labels.items()]
    try:
        by_value = {int(value): name for value, name in pairs}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: labels must map values to names or names to values, "
                         f"got {labels}") from None
    if sorted(by_value) != list(range(len(by_value))):
        raise ValueError(f"{path}: labels must be 0..K-1, got {sorted(by_value)}")
    return [by_value[v] for v in range(len(by_value))]


def dataset_json_setting(root: str | Path, key: str) -> int | list[str]:
    """``num_classes``, ``in_channels`` or ``class_names`` as ``<root>/dataset.json`` says.

    The class names in label value order (either ``labels`` convention, see
    `class_names_from_labels`), their number, and the number of ``channel_names`` (nnU-Net
    v2) or ``modality`` (Decathlon) entries. ``conf/data/decathlon.yaml`` reads them through
    the ``${dataset_json:<root>,<key>}`` resolver (`volseg.runs.resolvers`).

    Raises:
        FileNotFoundError: ``root`` holds no dataset.json.
        ValueError: dataset.json is unreadable or names no labels (or no channels), or ``key``
            is none of `DATASET_JSON_SETTINGS`.
    """
    if key not in DATASET_JSON_SETTINGS:
        raise ValueError(f"dataset_json: unknown setting {key!r}, expected one of "
                         f"{', '.join(DATASET_JSON_SETTINGS)}")
    layout = DecathlonLayout(root)
    path = layout.root / "dataset.json"
    if key == "in_channels":
        channels = layout.channel_names
        if not channels:
            raise ValueError(f"{path}: no channel_names or modality; set data.in_channels")
        return len(channels)
    names = layout.class_names
    if not names:
        raise ValueError(f"{path}: no labels; set data.class_names")
    return len(names) if key == "num_classes" else names


class DecathlonLayout(DatasetLayout):
    """Cases of a Decathlon or nnU-Net raw dataset: ``imagesTr`` + ``labelsTr`` + ``dataset.json``.

    Images that hold several channels in one 4D file are read channel-first; their channel
    count must match ``dataset.json``.
    """

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._meta: dict | None = None

    @classmethod
    def recognises(cls, root: Path) -> bool:
        return (root / "dataset.json").is_file() and (root / "labelsTr").is_dir()

    @property
    def meta(self) -> dict:
        if self._meta is None:
            path = self.root / "dataset.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; {_SET_ROOT}")
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
                raise ValueError(f"{path}: unreadable ({error}); {_SET_ROOT}") from None
            if not isinstance(meta, dict):
                raise ValueError(f"{path}: not a JSON object; {_SET_ROOT}")
            self._meta = meta
        return self._meta

    @property
    def file_ending(self) -> str:
        return self.meta.get("file_ending", ".nii.gz")

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        return class_names_from_labels(self.meta.get("labels", {}), self.root / "dataset.json")

    @property
    def channel_names(self) -> list[str]:  # type: ignore[override]
        channels = self.meta.get("channel_names", self.meta.get("modality", {}))
        return [channels[k] for k in sorted(channels, key=int)]

    def list_cases(self) -> list[Case]:
        ending = self.file_ending  # reads dataset.json first: it defines the rest
        if isinstance(self.meta.get("training"), list):
            cases = [self._listed_case(entry, ending) for entry in self.meta["training"]]
        else:
            cases = self._per_channel_cases(ending)
        if not cases:
            raise FileNotFoundError(f"{self.root / 'imagesTr'}: no *{ending} images")
        return cases

    def read_image(self, case: Case) -> Volume:
        return read_image_files(case.image_paths, len(self.channel_names) or None)

    def _expected_channels(self) -> list[int]:
        return list(range(len(self.channel_names) or 1))

    def _listed_case(self, entry: dict, ending: str) -> Case:
        """One ``training`` entry: a single (4D) image file, or nnU-Net v1 channel files."""
        where = self.root / "dataset.json"
        try:
            image, label = (self.root / os.path.normpath(entry[k]) for k in ("image", "label"))
        except (KeyError, TypeError):
            raise ValueError(f"{where}: training entries need 'image' and 'label', "
                             f"got {entry}") from None
        case_id = strip_ending(image.name, (ending,))
        if case_id is None:
            raise ValueError(f"{where}: {entry['image']} does not end in {ending}")
        if image.is_file():
            image_paths: tuple[Path, ...] = (image,)
        else:
            image_paths = tuple(image.parent / f"{case_id}_{c:04d}{ending}"
                                for c in self._expected_channels())
            if not image_paths[0].is_file():
                raise FileNotFoundError(f"{image}: missing (nor is there {image_paths[0].name})")
            for path in image_paths[1:]:
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing channel of case {case_id}")
        if not label.is_file():
            raise FileNotFoundError(f"{label}: missing label for case {case_id}")
        return Case(case_id, image_paths, label)

    def _per_channel_cases(self, ending: str) -> list[Case]:
        """nnU-Net v2: every ``imagesTr/<case>_XXXX`` file, grouped by case."""
        images_dir, labels_dir = self.root / "imagesTr", self.root / "labelsTr"
        if not images_dir.is_dir():
            raise FileNotFoundError(f"{images_dir}: missing (expected the nnU-Net raw layout)")
        channels: dict[str, dict[int, Path]] = defaultdict(dict)
        for path in sorted(images_dir.glob(f"*{ending}")):
            if path.name.startswith("."):
                continue
            match = _CHANNEL_FILE.match(path.name[: -len(ending)])
            if match is None:
                raise ValueError(f"{path}: image names must end in _0000{ending}, _0001{ending}...")
            channels[match["case"]][int(match["channel"])] = path
        expected = self._expected_channels()
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
        return cases
