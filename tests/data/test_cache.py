import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from volseg.data.adapters.base import Case, DatasetLayout
from volseg.data.cache import CaseCache, dataset_cache_dir
from volseg.data.case_checks import BadCasesError
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume, write_volume


class _Folder(DatasetLayout):
    def list_cases(self):
        return [Case(p.name.split(".")[0], (p,), self.root / "labels" / p.name)
                for p in sorted((self.root / "images").iterdir())]


def _write(root, name, label_array, spacing=(1.0, 1.0, 2.0), image_array=None):
    if image_array is None:
        image_array = np.full(label_array.shape, 100, np.int16)
    image = Volume(image_array, spacing, (5.0, 6.0, 7.0))
    write_volume(image, root / "images" / f"{name}.nii.gz")
    write_volume(image.with_array(label_array), root / "labels" / f"{name}.nii.gz")


def _cache(tmp_path, num_classes=3, **pre):
    layout = _Folder(tmp_path)
    preprocessor = Preprocessor(spacing=(2.0, 2.0, 2.0), intensity="none", **pre)
    return layout, CaseCache(tmp_path / "cache", layout, preprocessor, num_classes, 1)


def _inodes(cache, names):
    return {n: os.stat(cache.folder / f"{n}.image.npy").st_ino for n in names}


def test_build_then_load_memory_mapped(tmp_path):
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:6, 2:6, 1:3] = 2
    _write(tmp_path, "c1", label)
    layout, cache = _cache(tmp_path)
    assert cache.build(layout.list_cases()) == []
    image, pre_label, meta = cache.load("c1")
    assert isinstance(image, np.memmap) and image.shape == (1, 4, 4, 4)
    assert pre_label.dtype == np.uint8 and pre_label.shape == (4, 4, 4)
    assert meta["original"]["shape"] == [8, 8, 4] and meta["original"]["origin"] == [5, 6, 7]
    assert meta["class_voxels"] == [64 - 8, 0, 8]
    assert cache.classes_present("c1") == [2]
    locations = cache.locations("c1")
    assert list(locations) == [2] and isinstance(locations[2], np.memmap)
    assert (pre_label.ravel()[locations[2]] == 2).all() and locations[2].size == 8


def test_rebuilds_only_changed_or_interrupted_cases_and_new_settings(tmp_path):
    names = ["c1", "c2", "c3"]
    for name in names:
        _write(tmp_path, name, np.zeros((8, 8, 4), np.uint8))
    layout, cache = _cache(tmp_path)
    cases = layout.list_cases()
    cache.build(cases, workers=0)
    assert cache.locations("c1") == {}  # all background
    first = _inodes(cache, names)
    cache.build(cases, workers=0)
    assert _inodes(cache, names) == first  # nothing redone
    os.utime(tmp_path / "labels" / "c2.nii.gz", ns=(0, 10**18))  # an edited source file
    (cache.folder / "c3.json").unlink()  # a build killed before the case's JSON was written
    cache.build(cases, workers=0)
    again = _inodes(cache, names)
    assert again["c1"] == first["c1"]
    assert again["c2"] != first["c2"] and again["c3"] != first["c3"]
    _, other = _cache(tmp_path, window=(-500.0, 500.0))
    assert other.folder != cache.folder


@pytest.mark.slow
def test_parallel_build_is_byte_identical_to_serial(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for index in range(3):
        label = rng.integers(0, 3, (9, 7, 5)).astype(np.uint8)
        image = rng.normal(0, 100, (9, 7, 5)).astype(np.float32)
        _write(tmp_path, f"c{index}", label, spacing=(1.3, 0.9, 2.5), image_array=image)
    layout = _Folder(tmp_path)
    preprocessor = Preprocessor(spacing=(2.0, 2.0, 2.0), intensity="zscore")
    serial = CaseCache(tmp_path / "serial", layout, preprocessor, 3, 1)
    parallel = CaseCache(tmp_path / "parallel", layout, preprocessor, 3, 1)
    serial.build(layout.list_cases(), workers=0)
    with caplog.at_level(logging.WARNING):
        parallel.build(layout.list_cases(), workers=2, pool_min_seconds=0)
    assert "worker processes died" not in caplog.text  # the workers did the work
    files = sorted(p.name for p in serial.folder.iterdir())
    assert files == sorted(p.name for p in parallel.folder.iterdir())
    assert any(name.endswith(".image.npy") for name in files)
    for name in files:
        if name.endswith(".npy"):
            assert (serial.folder / name).read_bytes() == (parallel.folder / name).read_bytes()


def test_all_bad_cases_are_listed_in_one_error_naming_the_files(tmp_path):
    bad = np.zeros((8, 8, 4), np.uint8)
    bad[0, 0, 0] = 7
    _write(tmp_path, "c1", bad)
    _write(tmp_path, "c2", np.zeros((8, 8, 4), np.uint8))
    _write(tmp_path, "c3", np.zeros((8, 8, 4), np.uint8))
    write_volume(Volume(np.zeros((8, 8, 5), np.uint8), (1, 1, 2), (5.0, 6.0, 7.0)),
                 tmp_path / "labels" / "c3.nii.gz")
    layout, cache = _cache(tmp_path)
    with pytest.raises(BadCasesError) as raised:
        cache.build(layout.list_cases(), workers=0)
    message = str(raised.value)
    assert "2 case(s) failed" in message and "data.skip_bad_cases" in message
    assert f"{tmp_path / 'labels' / 'c1.nii.gz'}: label values [0, 7] outside 0..2" in message
    assert f"{tmp_path / 'labels' / 'c3.nii.gz'}: label grid differs from its image: shape" \
        in message
    assert [p.case_id for p in raised.value.problems] == ["c1", "c3"]
    assert cache.is_cached(layout.list_cases()[1])  # the good case was built all the same


def test_skipped_bad_case_is_remembered_until_its_files_change(tmp_path):
    bad = np.zeros((8, 8, 4), np.uint8)
    bad[1, 1, 1] = 9
    _write(tmp_path, "c1", bad)
    _write(tmp_path, "c2", np.zeros((8, 8, 4), np.uint8))
    layout, cache = _cache(tmp_path)
    cases = layout.list_cases()
    problems = cache.build(cases, workers=0, skip_bad=True)
    assert [(p.case_id, p.kind) for p in problems] == [("c1", "labels")]
    assert not (cache.folder / "c1.image.npy").exists()
    assert cache.recorded_problems(cases) == problems
    record = cache.folder / "c1.problems.json"
    stamp = record.stat().st_mtime_ns
    assert cache.build(cases, workers=0, skip_bad=True) == problems
    assert record.stat().st_mtime_ns == stamp  # not checked again: the files did not change
    _write(tmp_path, "c1", np.zeros((8, 8, 4), np.uint8))  # fixed
    assert cache.build(layout.list_cases(), workers=0) == []
    assert not record.exists() and (cache.folder / "c1.image.npy").exists()


def test_dataset_cache_dir_is_one_folder_per_dataset_root(tmp_path, monkeypatch):
    one, two = tmp_path / "one" / "Task01", tmp_path / "two" / "Task01"
    one.mkdir(parents=True)
    (tmp_path / "link").symlink_to(one)
    folder = dataset_cache_dir("cache", one)
    assert folder.parent == Path("cache") and re.fullmatch(r"Task01-[0-9a-f]{8}", folder.name)
    # However the same folder is spelled: relative, with "..", through a link.
    monkeypatch.chdir(tmp_path / "one")
    for spelling in ("Task01", "../one/Task01/", tmp_path / "link"):
        assert dataset_cache_dir("cache", spelling) == folder
    # Another dataset of the same name elsewhere gets its own folder.
    assert dataset_cache_dir("cache", two) != folder
    assert dataset_cache_dir("cache", two).name.startswith("Task01-")
