"""`volseg plan`: fingerprint, nnU-Net's rules, the plan file, and training with it."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from omegaconf import OmegaConf
from rich.console import Console

import volseg
from tests.conftest import FAST, compose_config
from tests.data.adapters import trees
from tests.data.test_fingerprint import MemoryLayout
from tests.experiments.test_experiments import SMALL
from volseg.cli.plan import main, run_plan, split_plan_options
from volseg.data.cache import dataset_cache_dir
from volseg.data.fingerprint import Fingerprint, compute_fingerprint
from volseg.data.preprocess import Preprocessor
from volseg.io import Volume
from volseg.planning.plan import make_plan, median_shape_at

REPO = Path(__file__).resolve().parents[1]


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


# Plans small enough to train in seconds on a CPU.
SMALL_PLAN = {"gpu_memory_gb": 0.05, "base_features": 4, "max_features": 16}


def test_plan_of_the_synthetic_dataset(train_config, tmp_path, shared_data_dir):
    cfg = train_config(f"data.cache_dir={tmp_path / 'cache'}")
    console = _quiet()
    output = tmp_path / "plans" / "synthetic.yaml"
    plan, fingerprint, written = run_plan(cfg, {**SMALL_PLAN, "output": str(output)}, console)
    assert written == output

    # The dataset's own cache folder, <cache_dir>/<root name>-<hash>, where the data module reads.
    path = dataset_cache_dir(tmp_path / "cache", cfg.data.root) / "fingerprint.json"
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
    # dataset.json names the channel CT: nnU-Net's CT scheme with the fingerprint's statistics
    stats = fingerprint.intensity[0]
    assert plan.preprocessing["intensity"] == "ct_percentile"
    assert plan.preprocessing["statistics"] == {
        "mean": [stats.mean], "std": [stats.std], "lower": [stats.percentile_00_5],
        "upper": [stats.percentile_99_5]}

    output_text = console.file.getvalue()
    assert "Dataset fingerprint: 6 cases" in output_text and "lesion" in output_text
    assert f"train with: volseg train plan={output}" in output_text

    # The plan file composes into a training config holding every planned value.
    again = compose_config("train", tmp_path, [f"plan={output}"])
    np.testing.assert_allclose(again.data.spacing, plan.spacing, rtol=1e-5)
    assert list(again.data.patch_size) == plan.patch_size
    assert again.data.batch_size == plan.network.batch_size
    assert again.data.root == str(Path(cfg.data.root).resolve())
    assert again.data.preprocessing.intensity == "ct_percentile"
    assert again.data.preprocessing.crop_nonzero
    assert again.model._target_ == "volseg.models.DynamicUNet"
    topology = plan.network.topology
    assert [list(s) if isinstance(s, list) else [s] * 3 for s in
            OmegaConf.to_container(again.model.strides)] == topology.strides
    assert list(again.model.features) == plan.network.features
    assert again.model.norm == "instance" and again.model.deep_supervision
    assert again.loss._target_ == "volseg.losses.DeepSupervisionLoss"
    assert again.plan.file == str(output.resolve())
    assert list(again.module.inference.tile_size) == plan.patch_size
    # the built network takes the planned patch
    from hydra.utils import instantiate
    assert instantiate(again.model).divisors == tuple(topology.divisors)


def test_plan_file_is_not_overwritten(train_config, tmp_path):
    cfg = train_config(f"data.cache_dir={tmp_path / 'cache'}")
    output = tmp_path / "mine.yaml"
    output.write_text("# my plan\n")
    with pytest.raises(FileExistsError, match=f"plan.output={output} exists"):
        run_plan(cfg, {**SMALL_PLAN, "output": str(output)}, _quiet())
    assert output.read_text() == "# my plan\n"
    run_plan(cfg, {**SMALL_PLAN, "output": str(output), "overwrite": True}, _quiet())
    assert "override /model: dynamic_unet" in output.read_text()


def test_plan_options_are_split_off_and_checked():
    options, rest = split_plan_options(["data=kits23", "plan.gpu_memory_gb=4",
                                        "+plan.deep_supervision=false"])
    assert options == {"gpu_memory_gb": 4, "deep_supervision": False} and rest == ["data=kits23"]
    with pytest.raises(ValueError, match="plan.voxel_budget: unknown plan option"):
        split_plan_options(["plan.voxel_budget=100"])


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
    plan = make_plan(fingerprint, 1, options=SMALL_PLAN)

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
    assert plan.separate_z
    assert plan.config()["data"]["preprocessing"]["anisotropy_threshold"] == 3.0
    # thick slices: the network pools in-plane first
    assert plan.network.topology.strides[1] == [2, 2, 1]


def test_isotropic_dataset_gets_the_median_spacing():
    layout = _anisotropic_layout([1.0, 1.2, 0.9, 1.1, 1.0, 1.3])
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    plan = make_plan(fingerprint, 1, options=SMALL_PLAN)
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
    # the plan crops to the non-zero box (nnU-Net's), so it plans on the cropped shapes
    plan = make_plan(fingerprint, 1, options=SMALL_PLAN)
    assert plan.preprocessing["crop_nonzero"]
    assert plan.median_shape == median_shape_at(fingerprint, plan.spacing, cropped=True)


def test_fixed_size_plans_a_patch_for_that_shape():
    layout = _anisotropic_layout([1.0, 1.0, 1.0])
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    fixed = Preprocessor(fixed_size={"in_plane": [64, 96], "slices": 16})
    plan = make_plan(fingerprint, 1, preprocessor=fixed, options=SMALL_PLAN)
    assert plan.spacing is None and plan.median_shape == [64, 96, 16]
    assert all(p <= m for p, m in zip(plan.patch_size, plan.median_shape))
    assert "spacing" not in plan.config()["data"]


@pytest.mark.parametrize(("channel_names", "expected"), [
    (["CT"], {"intensity": "ct_percentile"}),
    (["T2", "ADC"], {"intensity": "zscore", "nonzero": False}),
    (["CT", "PET"], {"intensity": "zscore", "nonzero": False}),  # one scheme serves all
    (None, {"intensity": "ct_window"}),  # unnamed: the data config's scheme stays
])
def test_intensity_scheme_follows_the_channel_names(channel_names, expected):
    layout = _anisotropic_layout([1.0, 1.0, 1.0])
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    plan = make_plan(fingerprint, 1, channel_names, options=SMALL_PLAN)
    assert expected.items() <= plan.preprocessing.items()


def test_zscore_over_nonzero_voxels_when_cropping_removes_a_quarter():
    layout = _anisotropic_layout([1.0, 1.0, 1.0])
    for image, _ in layout.volumes.values():
        image.array[:40] = 0  # 40 of about 100 x planes empty: the box keeps 60%
    fingerprint = compute_fingerprint(layout, layout.list_cases(), num_classes=2)
    assert make_plan(fingerprint, 1, ["T1"], options=SMALL_PLAN).preprocessing["nonzero"]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "volseg plan [--config-dir DIR] data=<name>" in capsys.readouterr().out


@pytest.mark.slow
def test_command_line(tmp_path, shared_data_dir, monkeypatch):
    """`volseg plan` as a user types it, from their own folder."""
    data = [o for o in FAST if o.startswith("data.layout")]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "volseg", "plan", "data=synthetic", *data,
         f"paths.data_dir={shared_data_dir}", f"data.cache_dir={tmp_path / 'cache'}",
         *(f"plan.{k}={v}" for k, v in SMALL_PLAN.items())],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train with: volseg train plan=plans/synthetic.yaml" in done.stdout
    assert len(list((tmp_path / "cache").glob("synthetic-*/fingerprint.json"))) == 1
    monkeypatch.chdir(tmp_path)

    # Training with it, as written in docs/datasets.md, runs in tests/test_docs_data_inference.py;
    # here the file it trains with: the data overrides given to the plan hold in training.
    planned = compose_config("train", tmp_path, ["plan=plans/synthetic.yaml"])
    assert planned.model._target_ == "volseg.models.DynamicUNet"
    assert planned.data.layout.num_cases == 6 and planned.data.cache_dir == str(tmp_path / "cache")


def _train_with_plan(tmp_path: Path, data: str, root: Path, *overrides: str) -> dict:
    main([f"data={data}", f"data.root={root}", f"paths.root_dir={tmp_path}", *overrides,
          f"data.cache_dir={tmp_path / 'cache'}", f"plan.output={tmp_path / 'plan.yaml'}",
          *(f"plan.{k}={v}" for k, v in SMALL_PLAN.items())])
    cfg = compose_config("train", tmp_path, [f"plan={tmp_path / 'plan.yaml'}", *SMALL])
    volseg.train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.slow
def test_mr_phantom_trains_from_its_plan_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = ["data.layout.num_cases=6", "data.layout.size_mm=[72,72,72]"]
    metrics = _train_with_plan(tmp_path, "synthetic_mri", tmp_path / "mri", *small)
    assert metrics["status"] == "completed" and "test/dice_vessel" in metrics
    plan = OmegaConf.load(tmp_path / "plan.yaml")
    assert plan.data.layout.num_cases == 6  # kept, so training reads the phantom planned on
    assert plan.data.preprocessing.intensity == "zscore"  # T1 and T2 channels


@pytest.mark.slow
@pytest.mark.parametrize(("data", "make"), [
    ("luna16", trees.make_luna16),      # Res2UNet's layout: MetaImage scans + annotations.csv
    ("kits23", trees.make_kits23),      # case folders
    ("hipmri", trees.make_hipmri),      # HipMRI's semantic labels
    ("decathlon", trees.make_decathlon),  # four-channel 4D NIfTI (MSD)
    ("nifti_folder", trees.make_nifti_folder),  # two-channel 4D, five classes (ResNet-50's)
    ("decathlon", trees.make_nnunet),   # nnU-Net v2 raw (Çiçek's sparse set uses nifti_folder)
], ids=["luna16", "kits23", "hipmri", "msd", "nifti_folder", "nnunet"])
def test_each_seed_layout_trains_from_its_plan_alone(tmp_path, data, make, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data" / data
    make(root)
    metrics = _train_with_plan(tmp_path, data, root)
    assert metrics["status"] == "completed" and metrics["parameters"] > 0
