"""`volseg plan`: fingerprint, nnU-Net's spacing and patch rules, printed overrides."""

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from omegaconf import OmegaConf
from rich.console import Console

from tests.conftest import FAST, compose_config
from tests.data.test_fingerprint import MemoryLayout
from volseg.data.cache import dataset_cache_dir
from volseg.data.fingerprint import Fingerprint, compute_fingerprint
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume
from volseg.models import UNet3D
from volseg.plan import (
    VOXEL_BUDGET,
    main,
    make_plan,
    median_shape_at,
    model_divisor,
    run_plan,
    suggest_patch_size,
)

REPO = Path(__file__).resolve().parents[1]


def _assert_patch_rules(patch, median_shape, divisor, budget):
    """Multiples of the divisor, within budget, never past the median shape rounded up to the
    divisor, and no axis can grow by one divisor step without breaking one of these."""
    cap = [max(divisor, math.ceil(m / divisor) * divisor) for m in median_shape]
    assert all(p % divisor == 0 and divisor <= p <= c for p, c in zip(patch, cap))
    assert math.prod(patch) <= budget
    for axis in range(3):
        grown = list(patch)
        grown[axis] += divisor
        assert grown[axis] > cap[axis] or math.prod(grown) > budget


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_plan_of_the_synthetic_dataset(train_config, tmp_path, shared_data_dir):
    cfg = train_config(f"data.cache_dir={tmp_path / 'cache'}")
    console = _quiet()
    plan, fingerprint, path = run_plan(cfg, console)

    # The dataset's own cache folder, <cache_dir>/<root name>-<hash>, where the data module reads.
    assert path.parent.parent == tmp_path / "cache" and path.parent.name.startswith("synthetic-")
    assert path == dataset_cache_dir(tmp_path / "cache", cfg.data.root) / "fingerprint.json"
    assert Fingerprint.load(path) == fingerprint
    # The spacing rule against the files' headers, read by SimpleITK: the synthetic data is not
    # anisotropic enough for the 10th-percentile rule, so the target is the median spacing.
    images = sorted((shared_data_dir / "synthetic" / "imagesTr").glob("*_0000.nii.gz"))
    spacings = np.array([sitk.ReadImage(str(p)).GetSpacing() for p in images])
    assert len(images) == len(fingerprint.cases) == 6
    np.testing.assert_allclose(plan.spacing, np.median(spacings, 0), rtol=1e-6)
    shapes = np.array([sitk.ReadImage(str(p)).GetSize() for p in images])
    expected = np.median(np.round(shapes * spacings / plan.spacing), 0)
    assert plan.median_shape == [int(round(n)) for n in expected]
    assert plan.divisor == UNet3D(1, 2, num_levels=3).divisor == 4  # FAST: model.num_levels=3
    _assert_patch_rules(plan.patch_size, plan.median_shape, 4, VOXEL_BUDGET)

    output = console.file.getvalue()
    assert "Dataset fingerprint: 6 cases" in output and "lesion" in output
    assert " ".join(plan.overrides()) in output and str(path) in output
    # The printed overrides are valid for train.py and set what the plan says.
    again = compose_config("train", tmp_path, plan.overrides())
    np.testing.assert_allclose(again.data.spacing, plan.spacing, rtol=1e-5)
    assert list(again.data.patch_size) == plan.patch_size


def test_plan_gives_ct_percentile_statistics(train_config, tmp_path):
    cfg = train_config(f"data.cache_dir={tmp_path / 'cache'}",
                       "data.preprocessing.intensity=ct_percentile")
    plan, fingerprint, _ = run_plan(cfg, _quiet())
    stats = fingerprint.intensity[0]
    assert plan.statistics == {"mean": [stats.mean], "std": [stats.std],
                               "lower": [stats.percentile_00_5],
                               "upper": [stats.percentile_99_5]}
    again = compose_config("train", tmp_path, ["data.preprocessing.intensity=ct_percentile",
                                               *plan.overrides()])
    pre = Preprocessor(**again.data.preprocessing)
    for key, values in plan.statistics.items():
        np.testing.assert_allclose(pre.statistics[key], values, rtol=1e-5)


def _anisotropic_layout(z_spacings):
    """Thick-slice cases: ~0.8 mm in-plane, few slices of ``z_spacings`` mm."""
    rng = np.random.default_rng(0)
    volumes = {}
    for i, z in enumerate(z_spacings):
        shape = (96 + 8 * (i % 3), 96, 10 + i)
        spacing = (0.7 + 0.05 * i, 0.7 + 0.05 * i, z)
        image = rng.normal(0, 1, shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[40:60, 40:60, 3:7] = 1
        volumes[f"case_{i}"] = (Volume(image, spacing), Volume(label, spacing))
    return MemoryLayout(volumes)


@pytest.mark.parametrize("z_spacings", [[5.0, 6.0, 4.0, 8.0, 5.5, 3.6],
                                        [5.0, 6.0, 0.5, 8.0, 5.5, 7.0]],
                         ids=["thick", "one_thin_case"])
def test_anisotropic_dataset_gets_nnunets_spacing_and_patch(z_spacings):
    layout = _anisotropic_layout(z_spacings)
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    plan = make_plan(fingerprint, divisor=16)

    spacings = np.array([image.spacing for image, _ in layout.volumes.values()])
    in_plane = np.median(spacings[:, :2], 0)
    # z is far coarser (> 3x) and far shorter (< 1/3 of the voxels) than x and y: nnU-Net takes
    # the 10th percentile of the z spacings, but never finer than the in-plane spacing.
    tenth = np.percentile(spacings[:, 2], 10)
    z = tenth if tenth >= in_plane.max() else in_plane.max() + 1e-5
    np.testing.assert_allclose(plan.spacing, [*in_plane, z], rtol=1e-12)
    assert z < np.median(spacings[:, 2])
    shapes = np.array([image.spatial_shape for image, _ in layout.volumes.values()])
    expected = np.median(np.round(shapes * spacings / plan.spacing), 0)
    assert plan.median_shape == [int(round(n)) for n in expected]
    _assert_patch_rules(plan.patch_size, plan.median_shape, 16, VOXEL_BUDGET)
    assert plan.separate_z
    assert "++data.preprocessing.anisotropy_threshold=3.0" in plan.overrides()


def test_isotropic_dataset_gets_the_median_spacing():
    layout = _anisotropic_layout([1.0, 1.2, 0.9, 1.1, 1.0, 1.3])
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    plan = make_plan(fingerprint, divisor=16)
    spacings = np.array([image.spacing for image, _ in layout.volumes.values()])
    np.testing.assert_allclose(plan.spacing, np.median(spacings, 0))
    assert not plan.separate_z


def test_cropped_shapes_are_used_with_crop_nonzero():
    layout = _anisotropic_layout([1.0, 1.0, 1.0])
    for image, _ in layout.volumes.values():
        image.array[:30] = 0  # the first 30 x planes are empty
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    full = median_shape_at(fingerprint, [0.75, 0.75, 1.0])
    cropped = median_shape_at(fingerprint, [0.75, 0.75, 1.0], cropped=True)
    assert cropped[0] < full[0] and cropped[1:] == full[1:]
    assert make_plan(fingerprint, cropped=True).median_shape == median_shape_at(
        fingerprint, make_plan(fingerprint, cropped=True).spacing, cropped=True)


def test_fixed_size_plans_a_patch_for_that_shape():
    layout = _anisotropic_layout([1.0, 1.0, 1.0])
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    plan = make_plan(fingerprint, divisor=16, fixed_size={"in_plane": [512, 1024], "slices": 32})
    assert plan.spacing is None and plan.median_shape == [512, 1024, 32]
    _assert_patch_rules(plan.patch_size, plan.median_shape, 16, VOXEL_BUDGET)
    assert not any(o.startswith("data.spacing") for o in plan.overrides())


@pytest.mark.parametrize(("median", "divisor", "budget", "expected"), [
    ((300, 300, 300), 16, 128**3, [128, 128, 128]),
    ((40, 40, 20), 8, 128**3, [40, 40, 24]),      # all of a small median case
    ((512, 512, 32), 16, 128**3, None),           # thin slab: z stays whole
    ((170, 600, 90), 32, 64**3, None),
    ((100, 100, 100), 64, 32**3, [64, 64, 64]),    # the smallest patch the model takes
])
def test_patch_size_rule(median, divisor, budget, expected):
    patch = suggest_patch_size(median, divisor, budget)
    if expected is not None:
        assert patch == expected
    if divisor**3 <= budget:
        _assert_patch_rules(patch, median, divisor, budget)
    if median == (512, 512, 32):
        assert patch[2] == 32 and patch[0] == patch[1]


@pytest.mark.parametrize(("overrides", "divisor"), [
    (["model=unet3d"], 8), (["model=resnet_seg"], 16), (["model=resunet"], 32),
    (["model=unet3d", "+model.divisor=64"], 64),
])
def test_divisor_comes_from_the_model(overrides, divisor, tmp_path):
    cfg = compose_config("train", tmp_path, overrides)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_divisor(model) == divisor


def test_divisor_of_an_unknown_model_is_16():
    assert model_divisor({"_target_": "volseg.models.NoSuchNet"}) == 16


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "volseg plan [--config-dir DIR] data=<name>" in capsys.readouterr().out


@pytest.mark.slow
def test_command_line(tmp_path, shared_data_dir):
    data = [o for o in FAST if o.startswith(("data.layout", "model."))]
    done = subprocess.run(
        [sys.executable, "-m", "volseg", "plan", "data=synthetic", *data,
         f"paths.data_dir={shared_data_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "overrides: data.spacing=[" in done.stdout
    assert len(list((tmp_path / "cache").glob("synthetic-*/fingerprint.json"))) == 1
