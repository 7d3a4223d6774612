"""The synthetic CT generator: content, geometry on disk (read back by nibabel), and the
write-once, atomic, concurrency-safe dataset folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import volseg.data.synthetic as synthetic
from volseg.data.synthetic import case_id, generate_synthetic_dataset, synthetic_case

# The size the fast training config uses: anatomy scaled to 0.53 of the default.
SIZE = (96.0, 96.0, 64.0)
SEED = 7
SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


@pytest.fixture(scope="module")
def cases() -> list:
    return [synthetic_case(SEED, i, size_mm=SIZE) for i in range(6)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", num_cases=2,
                                      seed=SEED, size_mm=SIZE)


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.iterdir() if p.name != root.name)


def test_deterministic_per_seed_and_index():
    image, label = synthetic_case(3, 1, size_mm=SIZE)
    image2, label2 = synthetic_case(3, 1, size_mm=SIZE)
    np.testing.assert_array_equal(image.array, image2.array)
    np.testing.assert_array_equal(label.array, label2.array)
    assert image.geometry() == image2.geometry()
    for other_seed, other_index in [(4, 1), (3, 2)]:
        other, _ = synthetic_case(other_seed, other_index, size_mm=SIZE)
        same_grid = other.array.shape == image.array.shape
        assert not same_grid or not np.array_equal(other.array, image.array)
        assert other.spacing != image.spacing  # continuous draws: equal only by accident


def test_labels_and_dtypes(cases):
    for image, label in cases:
        assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
        organ, lesion = label.array == 1, label.array == 2
        assert set(np.unique(label.array)) == {0, 1, 2}
        assert lesion.sum() < organ.sum() / 4
        _, n_lesions = ndimage.label(lesion, SIX_NEIGHBOURS)
        assert 1 <= n_lesions <= 3


def test_lesion_voxels_never_touch_background(cases):
    for _, label in cases:
        # Every 6-neighbour of a lesion voxel must be organ or lesion: no lesion on the border
        # of the organ, none outside it. Voxels on the array border would touch outside space.
        near_background = ndimage.binary_dilation(label.array == 0, SIX_NEIGHBOURS,
                                                  border_value=1)
        assert not (near_background & (label.array == 2)).any()


def test_hounsfield_statistics(cases):
    for image, label in cases:
        hu, lab = image.array.astype(float), label.array
        organ, lesion = hu[lab == 1].mean(), hu[lab == 2].mean()
        assert 90 < organ < 140 and lesion < organ - 40
        # The FOV corners lie outside the elliptic body: air at -1000 HU plus noise of 15-20 HU
        # (clipping at -1024 shifts the mean by well under 1 HU).
        air = hu[:4, :4, :]
        assert abs(air.mean() + 1000) < 3
        assert 10 < air.std() < 25
        # The spine is bright and unlabelled: a threshold alone cannot find the organ.
        bright = hu > 400
        assert bright.sum() > 100
        assert not lab[bright].any()


def test_blur_matches_scipy_gaussian_filter():
    volume = np.random.default_rng(0).normal(size=(20, 17, 9)).astype(np.float32)
    sigma = (1.0, 2.0, 0.5)
    # Both truncate at the same radius for these sigmas (3, 6, 2 voxels) and replicate edges;
    # float32 accumulation in a different order: 1e-5 absolute on unit-variance input.
    expected = ndimage.gaussian_filter(volume.astype(float), sigma, mode="nearest", truncate=3.0)
    np.testing.assert_allclose(synthetic._gaussian_blur(volume, sigma), expected, atol=1e-5)


def test_geometry(cases):
    spacings = []
    for image, label in cases:
        sx, sy, sz = image.spacing
        assert sx == sy and 0.9 <= sx <= 1.3 and 2.0 <= sz <= 3.0
        expected = tuple(int(round(s / d)) for s, d in zip(SIZE, image.spacing, strict=True))
        assert image.spatial_shape == expected
        assert -400 < image.origin[2] < -200 and np.linalg.norm(image.origin) > 1
        assert image.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert label.geometry() == image.geometry()
        spacings.append(image.spacing)
    assert len(set(spacings)) == len(spacings)  # spacing varies per case


def test_files_read_back_with_nibabel(dataset):
    for i in range(2):
        image, label = synthetic_case(SEED, i, size_mm=SIZE)
        itk_affine = np.eye(4)
        itk_affine[:3, :3] = np.diag(image.spacing)
        itk_affine[:3, 3] = image.origin
        # NIfTI stores RAS+, ITK works in LPS+: the first two world axes flip sign.
        expected_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ itk_affine
        for path, volume, dtype in [
            (dataset / "imagesTr" / f"{case_id(i)}_0000.nii.gz", image, np.int16),
            (dataset / "labelsTr" / f"{case_id(i)}.nii.gz", label, np.uint8),
        ]:
            nifti = nib.load(path)
            np.testing.assert_allclose(nifti.affine, expected_affine, atol=1e-4)
            np.testing.assert_allclose(nifti.header.get_zooms(), image.spacing, atol=1e-5)
            assert nifti.get_data_dtype() == dtype
            # nibabel indexes voxels in file order, which is volseg's (x, y, z).
            np.testing.assert_array_equal(np.asarray(nifti.dataobj), volume.array)


def test_dataset_json(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["name"] and meta["description"]
    params = meta["volseg_synthetic"]
    assert (params["num_cases"], params["seed"], params["size_mm"]) == (2, SEED, list(SIZE))
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [
        "synth_000_0000.nii.gz", "synth_001_0000.nii.gz"]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [
        "synth_000.nii.gz", "synth_001.nii.gz"]


def test_second_call_writes_nothing_and_new_parameters_regenerate(tmp_path):
    root = tmp_path / "ds"
    generate_synthetic_dataset(root, num_cases=3, seed=1, size_mm=SIZE)
    before = _files(root)
    assert generate_synthetic_dataset(root, num_cases=3, seed=1, size_mm=SIZE) == root
    assert _files(root) == before

    generate_synthetic_dataset(root, num_cases=2, seed=2, size_mm=SIZE)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["volseg_synthetic"]["seed"] == 2
    # The old dataset is replaced as a whole: its third case does not linger.
    assert not (root / "imagesTr" / "synth_002_0000.nii.gz").exists()
    image = nib.load(root / "imagesTr" / "synth_000_0000.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj),
                                  synthetic_case(2, 0, size_mm=SIZE)[0].array)
    assert _siblings(root) == []


def test_generates_into_an_existing_empty_folder(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    generate_synthetic_dataset(root, num_cases=2, seed=1, size_mm=SIZE)
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2


def test_missing_file_triggers_regeneration(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "ds", num_cases=2, seed=1, size_mm=SIZE)
    (root / "labelsTr" / "synth_001.nii.gz").unlink()
    generate_synthetic_dataset(root, num_cases=2, seed=1, size_mm=SIZE)
    assert (root / "labelsTr" / "synth_001.nii.gz").is_file()


def test_stale_temporary_siblings(tmp_path):
    root = tmp_path / "ds"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = synthetic._host()
    ours = tmp_path / f".ds.partial-{host}-{dead.pid}-deadbeef"
    elsewhere = tmp_path / f".ds.partial-otherhost{host}-{dead.pid}-deadbeef"
    for stale in (ours, elsewhere):
        (stale / "imagesTr").mkdir(parents=True)
        (stale / "imagesTr" / "synth_000_0000.nii.gz").write_bytes(b"half a file")

    generate_synthetic_dataset(root, num_cases=2, seed=1, size_mm=SIZE)
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2
    assert not ours.exists()  # left by a dead process on this host: cleaned up
    assert elsewhere.exists()  # maybe a live generation on another host: not ours to delete


def test_interrupted_generation_leaves_root_as_it_was(tmp_path, monkeypatch):
    root = generate_synthetic_dataset(tmp_path / "ds", num_cases=2, seed=1, size_mm=SIZE)
    before = _files(root)
    real_case = synthetic.synthetic_case

    def crash_on_second_case(seed, index, **kwargs):
        if index == 1:
            raise KeyboardInterrupt
        return real_case(seed, index, **kwargs)

    monkeypatch.setattr(synthetic, "synthetic_case", crash_on_second_case)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(root, num_cases=2, seed=5, size_mm=SIZE)
    assert _files(root) == before
    assert _siblings(root) == []
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(tmp_path / "fresh", num_cases=2, seed=5, size_mm=SIZE)
    assert not (tmp_path / "fresh").exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "dataset.json").write_text('{"name": "my real data"}')
    with pytest.raises(FileExistsError, match="synthetic"):
        generate_synthetic_dataset(root, num_cases=2, size_mm=SIZE)
    assert json.loads((root / "dataset.json").read_text()) == {"name": "my real data"}


def test_loser_of_the_rename_race_keeps_the_winners_dataset(tmp_path, monkeypatch):
    root = generate_synthetic_dataset(tmp_path / "ds", num_cases=2, seed=1, size_mm=SIZE)
    before = _files(root)
    real_is_current = synthetic._is_current
    calls = []

    def not_yet_on_first_look(*args):
        # The first look happens before a concurrent winner finished; later looks see it.
        calls.append(args)
        return len(calls) > 1 and real_is_current(*args)

    monkeypatch.setattr(synthetic, "_is_current", not_yet_on_first_look)
    assert generate_synthetic_dataset(root, num_cases=2, seed=1, size_mm=SIZE) == root
    assert len(calls) == 2
    assert _files(root) == before  # the winner's files, untouched
    assert _siblings(root) == []  # the loser's copy is gone


def test_concurrent_generations(tmp_path):
    root = tmp_path / "ds"
    errors = []

    def generate():
        try:
            generate_synthetic_dataset(root, num_cases=2, seed=3, size_mm=SIZE)
        except BaseException as error:  # reported below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert synthetic._is_current(root, json.loads((root / "dataset.json").read_text())
                                 ["volseg_synthetic"])
    assert _siblings(root) == []


@pytest.mark.slow
def test_concurrent_processes(tmp_path):
    root = tmp_path / "ds"
    code = ("from volseg.data.synthetic import generate_synthetic_dataset as g; "
            f"g({str(root)!r}, num_cases=3, seed=3, size_mm={SIZE!r})")
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ}) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 3
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(nib.load(root / "labelsTr" / f"{case_id(i)}.nii.gz").dataobj),
            synthetic_case(3, i, size_mm=SIZE)[1].array)
    assert _siblings(root) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_cases": 0}, "num_cases"), ({"size_mm": (96, 96)}, "size_mm"),
     ({"size_mm": (20, 96, 96)}, "size_mm")],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()
