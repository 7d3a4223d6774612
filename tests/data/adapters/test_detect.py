"""Which adapter reads a dataset root: each layout recognises its own tree, and only it."""

import pytest

from tests.data.adapters import trees
from volseg.data.adapters.decathlon import DecathlonLayout
from volseg.data.adapters.detect import detect_layout
from volseg.data.adapters.hipmri import HipMRILayout
from volseg.data.adapters.kits23 import KiTS23Layout
from volseg.data.adapters.luna16 import LUNA16Layout
from volseg.data.adapters.nifti_folder import NiftiFolderLayout

EXPECTED = {"luna16": LUNA16Layout, "kits23": KiTS23Layout, "hipmri": HipMRILayout,
            "decathlon": DecathlonLayout, "nnunet": DecathlonLayout,
            "nifti_folder": NiftiFolderLayout}


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_each_tree_is_read_by_its_own_layout(layout, tmp_path):
    ids = getattr(trees, f"make_{layout}")(tmp_path / layout)
    found = detect_layout(tmp_path / layout)
    assert type(found) is EXPECTED[layout]
    assert sorted(c.case_id for c in found.list_cases()) == sorted(ids)
    others = [cls for name, cls in EXPECTED.items() if cls is not EXPECTED[layout]]
    assert not any(cls.recognises(tmp_path / layout) for cls in others)


def test_case_folders_without_dataset_folder_and_a_plain_folder(tmp_path):
    trees.make_kits23(tmp_path / "kits23", cases=2)
    (tmp_path / "kits23" / "dataset").rename(tmp_path / "flat_kits")
    assert type(detect_layout(tmp_path / "flat_kits")) is KiTS23Layout
    (tmp_path / "plain").mkdir()
    assert detect_layout(tmp_path / "plain") is None
