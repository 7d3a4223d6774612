"""Bad input: each case fails with one line naming the file or key, or is handled (pad, skip).

Training data is checked where the cache is built (`volseg.data.case_checks.check_case`, which
``volseg verify`` runs too); ``predict.py`` reads through `volseg.inference.inputs`.
Every failing case also asserts that nothing was written under its final name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import volseg
from tests.conftest import compose_config
from tests.inference.conftest import make_checkpoint
from volseg.data.adapters.nifti_folder import NiftiFolderLayout
from volseg.data.cache import CaseCache
from volseg.data.case_checks import BadCasesError
from volseg.data.preprocess import Preprocessor
from volseg.engine.predict import predict_cases
from volseg.io import GEOMETRY_TOLERANCE, Volume, write_volume

ROOT = Path(__file__).resolve().parents[2]
SPACING, ORIGIN = (2.0, 2.0, 2.5), (5.0, 6.0, 7.0)
SHAPE = (10, 10, 6)  # smaller than every patch used here


def _image(shape=SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 50, shape).astype(np.float32)


def _label(shape=SHAPE, foreground: bool = True) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    if foreground:
        label[2:6, 2:6, 1:4] = 1
        label[3, 3, 2] = 2
    return label


def _write_case(root: Path, name: str, foreground: bool = True, seed: int = 0) -> None:
    """A clean image/label pair in the nifti_folder layout (``images/``, ``labels/``)."""
    image = Volume(_image(seed=seed), SPACING, ORIGIN)
    write_volume(image, root / "images" / f"{name}.nii.gz")
    write_volume(image.with_array(_label(foreground=foreground)),
                 root / "labels" / f"{name}.nii.gz")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _save(array: np.ndarray, path: Path, origin=ORIGIN, spacing=SPACING) -> None:
    """A NIfTI of any dimensionality (write_volume takes 3D only)."""
    # NIfTI's affine is RAS, SimpleITK's geometry LPS: flip x and y to get the same grid.
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [-origin[0], -origin[1], origin[2]]
    nib.save(nib.Nifti1Image(array, affine), path)


def _rewrite_label(root: Path, **geometry) -> None:
    geometry = {"spacing": SPACING, "origin": ORIGIN, **geometry}
    write_volume(Volume(_label(), geometry["spacing"], geometry["origin"]),
                 root / "labels" / "bad.nii.gz")


def _image_path(root: Path) -> Path:
    return root / "images" / "bad.nii.gz"


def _label_path(root: Path) -> Path:
    return root / "labels" / "bad.nii.gz"


def _nan_image(path: Path) -> None:
    array = _image()
    array[0, 0, 0], array[1, 1, 1] = np.nan, np.inf
    write_volume(Volume(array, SPACING, ORIGIN), path)


def _bad_labels(root: Path) -> None:
    label = _label().astype(np.int16)
    label[0, 0, 0], label[9, 9, 5] = -1, 3
    write_volume(Volume(label, SPACING, ORIGIN), _label_path(root))


# What is done to case "bad" -> (its problem kind, the file named, the rest of the one line).
TRAINING_DAMAGE = {
    "truncated .nii.gz": (lambda r: _truncate(_image_path(r)), "unreadable", _image_path,
                          r"damaged or truncated gzip stream \(.+\)"),
    "zero-byte .nii.gz": (lambda r: _image_path(r).write_bytes(b""), "unreadable", _image_path,
                          r"unreadable image \(.+\)"),
    "shape mismatch": (lambda r: write_volume(Volume(_label((10, 10, 7)), SPACING, ORIGIN),
                                              _label_path(r)),
                       "geometry", _label_path,
                       re.escape("label grid differs from its image: shape (10, 10, 7) != "
                                 "(10, 10, 6)")),
    "spacing mismatch": (lambda r: _rewrite_label(r, spacing=(2.0, 2.01, 2.5)), "geometry",
                         _label_path,
                         re.escape("label grid differs from its image: spacing (2.0, 2.01, 2.5) "
                                   "!= (2.0, 2.0, 2.5) (tolerance 0.001)")),
    "origin mismatch": (lambda r: _rewrite_label(r, origin=(5.0, 6.01, 7.0)), "geometry",
                        _label_path,
                        re.escape("label grid differs from its image: origin (5.0, 6.01, 7.0) "
                                  "!= (5.0, 6.0, 7.0) (tolerance 0.001)")),
    "label >= num_classes and negative": (
        _bad_labels, "labels", _label_path,
        re.escape("label values [-1, 0, 1, 2, 3] outside 0..2 (data.num_classes=3)")),
    "NaN/inf image": (lambda r: _nan_image(_image_path(r)), "non-finite", _image_path,
                      re.escape("2 NaN/inf voxel(s) (SimpleITK would read them as 0)")),
    "2D image": (lambda r: _save(_image((10, 10)), _image_path(r)), "unreadable", _image_path,
                 re.escape("expected a 3D image with channels, got size (10, 10) with "
                           "1 component(s) per voxel")),
    "2 channels, data.in_channels=1": (
        lambda r: _save(_image((*SHAPE, 2)), _image_path(r)), "channels", _image_path,
        re.escape("2 channel(s), data.in_channels=1")),
}


def _cache(root: Path) -> tuple[NiftiFolderLayout, CaseCache]:
    layout = NiftiFolderLayout(root)
    return layout, CaseCache(root / "cache", layout, Preprocessor(intensity="none"),
                             num_classes=3, in_channels=1)


@pytest.mark.parametrize("damage", TRAINING_DAMAGE, ids=list(TRAINING_DAMAGE))
def test_bad_training_case_is_one_line_naming_the_file_and_is_not_cached(tmp_path, damage):
    change, kind, named, rest = TRAINING_DAMAGE[damage]
    for name in ("bad", "good"):
        _write_case(tmp_path, name)
    change(tmp_path)
    layout, cache = _cache(tmp_path)
    with pytest.raises(BadCasesError) as raised:
        cache.build(layout.list_cases(), workers=0, show_progress=False)
    [problem] = raised.value.problems
    assert (problem.case_id, problem.kind) == ("bad", kind)
    assert re.fullmatch(f"{re.escape(str(named(tmp_path)))}: {rest}", str(problem)), problem
    assert f"\n  {problem}" in str(raised.value)  # listed in the error, on its own line
    assert "data.skip_bad_cases=true" in str(raised.value).splitlines()[0]
    # Nothing half-written: the bad case has no arrays and no record under the final name.
    assert sorted(p.name for p in cache.folder.glob("bad.*")) == ["bad.problems.json"]
    assert cache.is_cached(layout.list_cases()[1])  # the good case was built all the same
    # data.skip_bad_cases=true: the same problem, returned instead of raised.
    assert cache.build(layout.list_cases(), workers=0, skip_bad=True,
                       show_progress=False) == [problem]


def test_geometry_within_the_tolerance_passes(tmp_path):
    _write_case(tmp_path, "bad")
    _rewrite_label(tmp_path, origin=(5.0, 6.0 + GEOMETRY_TOLERANCE / 2, 7.0))
    layout, cache = _cache(tmp_path)
    assert cache.build(layout.list_cases(), workers=0, show_progress=False) == []


# --- predict.py ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")  # 3 classes, 1 channel


@pytest.fixture
def bad_inputs(tmp_path) -> Path:
    """An input folder: one good volume and one of each kind of bad one."""
    folder = tmp_path / "in"
    good = Volume(_image(), SPACING, ORIGIN)
    for name in ("good", "truncated"):
        write_volume(good, folder / f"{name}.nii.gz")
    _truncate(folder / "truncated.nii.gz")
    _nan_image(folder / "nan.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    _save(_image((10, 10)), folder / "flat.nii.gz")
    write_volume(good, folder / "two_0000.nii.gz")  # nnU-Net naming: case "two", 2 channels
    write_volume(good, folder / "two_0001.nii.gz")
    return folder


PREDICT_FAILURES = {
    "empty": r"{in}/empty.nii.gz: unreadable image \(.+\)",
    "flat": r"{in}/flat.nii.gz: expected a 3D scalar image, got 2D with 1 component\(s\)",
    "nan": r"{in}/nan.nii.gz: 2 NaN/inf voxel\(s\) \(SimpleITK would read them as 0\)",
    "truncated": r"{in}/truncated.nii.gz: damaged or truncated gzip stream \(.+\)",
    # Both files that the nnU-Net channel naming grouped are named.
    "two": r"case two \({in}/two_0000.nii.gz, {in}/two_0001.nii.gz\): 2 channel\(s\), "
           r"the model expects 1",
}


def test_predict_fails_each_bad_case_in_one_line_and_writes_the_rest(checkpoint, bad_inputs,
                                                                     tmp_path):
    summary = predict_cases(checkpoint, bad_inputs, tmp_path / "out")
    assert summary["written"] == [str(tmp_path / "out" / "good.nii.gz")]
    failed = dict(summary["failed"])
    assert sorted(failed) == sorted(PREDICT_FAILURES)
    for case_id, pattern in PREDICT_FAILURES.items():
        expected = pattern.replace("{in}", re.escape(str(bad_inputs)))
        assert re.fullmatch(expected, failed[case_id]), failed[case_id]
    # Nothing under a failed case's name, and no temporary file left behind.
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.nii.gz"]


@pytest.mark.slow
def test_predict_cli_exits_1_naming_each_failed_case(checkpoint, bad_inputs, tmp_path):
    # Truncated and zero-byte are enough for the exit status; one run costs seconds each case.
    for name in ("nan.nii.gz", "flat.nii.gz", "two_0000.nii.gz", "two_0001.nii.gz"):
        (bad_inputs / name).unlink()
    result = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt_path={checkpoint}",
         f"input={bad_inputs}", f"output={tmp_path / 'out'}", f"hydra.run.dir={tmp_path}/hydra"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert re.search(r"FAILED empty: .*empty\.nii\.gz: unreadable image", output), output
    assert re.search(r"FAILED truncated: .*truncated\.nii\.gz: damaged or truncated", output)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.nii.gz"]


def test_predict_output_inside_its_input_is_refused_before_anything_is_written(
    checkpoint, tmp_path
):
    folder = tmp_path / "in"
    write_volume(Volume(_image(), SPACING, ORIGIN), folder / "good.nii.gz")
    for output in (folder, folder / "predictions"):
        with pytest.raises(ValueError) as raised:
            predict_cases(checkpoint, folder, output)
        assert str(raised.value) == f"output={output} lies inside the input folder {folder}"
    assert [p.name for p in folder.iterdir()] == ["good.nii.gz"]


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("override, first_line", [
    ("model=nope", "In 'train': Could not find 'model/nope'"),
    ("trainer.max_epoch=3", "Could not override 'trainer.max_epoch'."),
])
def test_bad_override_exits_nonzero_fast_naming_it(tmp_path, override, first_line):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), override],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == first_line, result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # no run folder


@pytest.mark.parametrize("train", ["true", "false"])
def test_checkpoint_with_another_class_count_fails_before_training(checkpoint, tmp_path, train):
    cfg = compose_config("train", tmp_path, [
        f"ckpt_path={checkpoint}", f"train={train}", "data.num_classes=4",
        "data.class_names=[background,organ,lesion,cyst]",
    ])
    with pytest.raises(ValueError) as raised:
        volseg.train(cfg)
    assert str(raised.value) == (
        f"ckpt_path={checkpoint} was trained for 3 classes (background, organ, lesion), "
        "but data.num_classes=4")
    assert not (tmp_path / "data").exists()  # refused before the data was even generated
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- handled, not refused: short trainings ------------------------------------------------------

PATCH = (16, 16, 8)  # larger than SHAPE on every axis


def _small_training(root: Path, tmp_path: Path, *overrides: str):
    return compose_config("train", tmp_path, [
        "data=nifti_folder", f"data.root={root}", "data.in_channels=1", "data.num_classes=3",
        "data.class_names=[background,organ,lesion]", f"data.patch_size={list(PATCH)}",
        "data.batch_size=2", "data.samples_per_epoch=2", "data.num_workers=0",
        "data.cache_workers=0", "model.features=4", "model.num_levels=3",
        "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null", "test=false", *overrides,
    ])


@pytest.mark.slow
def test_volume_smaller_than_the_patch_is_padded_and_trains(tmp_path):
    for i in range(5):
        _write_case(tmp_path / "raw", f"c{i}", seed=i)
    cfg = _small_training(tmp_path / "raw", tmp_path)
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert tuple(batch["image"].shape) == (2, 1, *PATCH)
    assert tuple(batch["label"].shape) == (2, *PATCH)
    metrics = volseg.train(cfg)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1


@pytest.mark.slow
def test_cases_without_foreground_train_with_foreground_oversampling(tmp_path):
    # Four of five cases empty: with one validation and one test case, at least two of the
    # three training cases have no foreground to centre a patch on.
    for i in range(5):
        _write_case(tmp_path / "raw", f"c{i}", foreground=i == 0, seed=i)
    cfg = _small_training(tmp_path / "raw", tmp_path, "data.foreground_fraction=1.0")
    metrics = volseg.train(cfg)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
