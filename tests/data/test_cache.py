import os

import numpy as np
import pytest

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.cache import CaseCache
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume, write_volume


class _Folder(DatasetLayout):
    def list_cases(self):
        return [Case(p.name.split(".")[0], (p,), self.root / "labels" / p.name)
                for p in sorted((self.root / "images").iterdir())]


def _write(root, name, label_array, spacing=(1.0, 1.0, 2.0)):
    image = Volume(np.full(label_array.shape, 100, np.int16), spacing, (5.0, 6.0, 7.0))
    write_volume(image, root / "images" / f"{name}.nii.gz")
    write_volume(image.with_array(label_array), root / "labels" / f"{name}.nii.gz")


def _cache(tmp_path, num_classes=3, **pre):
    layout = _Folder(tmp_path)
    preprocessor = Preprocessor(spacing=(2.0, 2.0, 2.0), intensity="none", **pre)
    return layout, CaseCache(tmp_path / "cache", layout, preprocessor, num_classes)


def test_build_then_load_memory_mapped(tmp_path):
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1:3] = 2
    _write(tmp_path, "c1", label)
    layout, cache = _cache(tmp_path)
    cache.build(layout.list_cases())
    image, pre_label, meta = cache.load("c1")
    assert isinstance(image, np.memmap) and image.shape == (1, 4, 4, 4)
    assert pre_label.dtype == np.uint8 and pre_label.shape == (4, 4, 4)
    assert meta["original"]["shape"] == [8, 8, 4] and meta["original"]["origin"] == [5, 6, 7]
    assert meta["class_voxels"] == [64 - 8, 0, 8]
    locations = cache.locations("c1")
    assert list(locations) == [2]
    assert (pre_label.ravel()[locations[2]] == 2).all()


def test_rebuilds_only_changed_cases_and_new_settings(tmp_path):
    _write(tmp_path, "c1", np.zeros((8, 8, 4), np.uint8))
    _write(tmp_path, "c2", np.zeros((8, 8, 4), np.uint8))
    layout, cache = _cache(tmp_path)
    cases = layout.list_cases()
    cache.build(cases)
    built = []
    cache.build(cases, progress=built.append)
    assert built == []
    label_file = tmp_path / "labels" / "c2.nii.gz"
    os.utime(label_file, ns=(0, 10**18))
    cache.build(cases, progress=built.append)
    assert built == ["c2"]
    _, other = _cache(tmp_path, window=(-500.0, 500.0))
    assert other.folder != cache.folder


def test_bad_label_values_and_grids_name_the_file(tmp_path):
    bad = np.zeros((8, 8, 4), np.uint8)
    bad[0, 0, 0] = 7
    _write(tmp_path, "c1", bad)
    layout, cache = _cache(tmp_path)
    with pytest.raises(ValueError, match=r"c1.nii.gz: label values \[0, 7\] outside 0..2"):
        cache.build(layout.list_cases())
    _write(tmp_path, "c1", np.zeros((8, 8, 4), np.uint8))
    write_volume(Volume(np.zeros((8, 8, 5), np.uint8), (1, 1, 2)),
                 tmp_path / "labels" / "c1.nii.gz")
    with pytest.raises(ValueError, match="c1.nii.gz: label grid differs from its image: shape"):
        cache.build(layout.list_cases())
