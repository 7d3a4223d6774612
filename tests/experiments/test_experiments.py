"""Every conf/experiment/ replication composes with its paper's values and runs end to end.

Each dataset is fabricated in the experiment's real on-disk layout by the adapters' own test
writers, then trained for one epoch of a few patches with narrow networks (the debug pattern);
the paper values are asserted on the config as composed, before the shrinking overrides.
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import DictConfig

import volseg
from tests.conftest import compose_config
from tests.data.adapters import test_hipmri, test_kits23, test_luna16, test_nifti_folder

pytestmark = pytest.mark.slow

# One epoch of two patches, one volume per validation round, no console furniture.
SMALL = [
    "data.samples_per_epoch=2",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.cache_workers=0",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "logger=csv",
]


def patch(edge: int, x: int | None = None) -> list[str]:
    """A cubic patch and tile of ``edge`` voxels, ``x`` along the first axis if given (a
    ResNet under instance norm needs more than one voxel left at its deepest level)."""
    size = f"[{x or edge},{edge},{edge}]"
    return [f"data.patch_size={size}", f"module.inference.tile_size={size}"]


def paper_config(tmp_path: Path, name: str) -> DictConfig:
    """``experiment=<name>`` exactly as a user composes it."""
    return compose_config("train", tmp_path / "paper", [f"experiment={name}"])


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[DictConfig, dict]:
    """A short real run of ``experiment=<name>`` on the data under ``tmp_path / "data"``."""
    cfg = compose_config("train", tmp_path, [f"experiment={name}", *SMALL, *overrides])
    volseg.train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    return cfg, metrics


def per_class(cfg: DictConfig, stage: str) -> set[str]:
    return {f"{stage}/dice_{c}" for c in cfg.data.class_names[1:]}


def test_unet3d_sparse(tmp_path, caplog):
    paper = paper_config(tmp_path, "unet3d_sparse")
    assert paper.model._target_ == "volseg.models.UNet3D" and paper.model.features == 32
    assert paper.model.norm == "batch"  # the paper's BN, where the framework default is instance
    assert paper.loss._target_ == "volseg.losses.SparseWeightedCrossEntropyLoss"
    assert paper.loss.ignore_index == paper.data.ignore_index == 255
    assert paper.data.augment.elastic_prob == 1.0
    assert (paper.data.augment.elastic_sigma, paper.data.augment.elastic_spacing) == (4.0, 32)

    # Sparse labels on disk: two annotated z-slices of four, 255 elsewhere.
    root = tmp_path / "data" / "xenopus_kidney"
    for i in range(5):
        test_nifti_folder.write_pair(root, f"embryo{i}", channels=1)
        label_file = root / "labels" / f"embryo{i}.nii.gz"
        labels = np.asarray(nib.load(label_file).dataobj) % 3
        labels[:, :, 1:3] = 255
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), test_nifti_folder.AFFINE), label_file)
    cfg, metrics = run(tmp_path, "unet3d_sparse", "model.features=4", "model.num_levels=3",
                       *patch(16))
    assert per_class(cfg, "test") | {"test/dice"} <= metrics.keys()
    assert "test/hd95" not in metrics  # surfaces of sparse labels are unknown
    # BN at 2 patches per device: the run says so once, naming the override.
    warnings = [r.getMessage() for r in caplog.records if "BatchNorm" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("set model.norm=instance")


def test_res2unet3d_luna16(tmp_path):
    paper = paper_config(tmp_path, "res2unet3d_luna16")
    assert paper.model._target_ == "volseg.models.res2unet3d.Res2UNet3D"
    assert paper.loss._target_ == "volseg.losses.DiceLoss"
    assert paper.data.preprocessing.intensity == "ct_window"
    assert list(paper.data.preprocessing.window) == [-1000.0, 400.0]

    test_luna16.write_dataset(tmp_path / "data" / "luna16")  # every scan has a nodule
    cfg, metrics = run(tmp_path, "res2unet3d_luna16", "model.features=4", "model.num_levels=3",
                       "data.spacing=[1.5,1.5,2.5]", *patch(16))
    assert per_class(cfg, "test") == {"test/dice_nodule"} <= metrics.keys()


def test_resnet18_unet_kits23(tmp_path):
    paper = paper_config(tmp_path, "resnet18_unet_kits23")
    assert paper.model._target_ == "volseg.models.resunet.ResUNet" and paper.model.depth == 18
    assert paper.loss._target_ == "volseg.losses.FocalTverskyLoss"
    assert paper.optimizer._target_ == "torch.optim.Adam" and paper.optimizer.lr == 1e-4
    assert list(paper.data.patch_size) == [128, 128, 128] and paper.data.batch_size == 8
    assert paper.trainer.max_epochs == 50 and paper.callbacks.early_stopping.patience == 40
    assert paper.data.layout.drop_cyst and list(paper.data.class_names) == [
        "background", "kidney", "tumor"]

    for i in range(5):  # one voxel each of kidney, tumour and cyst
        test_kits23.write_case(tmp_path / "data" / "kits23" / "dataset" / f"case_{i:05d}")
    # A ResNet's stem and pool need multiples of 32; its widths shrink, its depth stays 18.
    cfg, metrics = run(tmp_path, "resnet18_unet_kits23", "model.features=4",
                       "data.spacing=null", *patch(32, x=64))
    assert per_class(cfg, "val") <= metrics.keys() and "val/dice_cyst" not in metrics
    # The write-up's metrics, each per class, as a mean over classes and per KiTS23 region.
    names = ("dice", "iou", "volume_similarity", "hausdorff")
    assert list(paper.module.metrics) == list(names)
    assert dict(paper.module.regions) == {"kidney_and_masses": [1, 2], "tumor": [2]}
    expected = {f"val/{m}{suffix}" for m in names
                for suffix in ("", "_kidney", "_tumor", "_region_kidney_and_masses",
                               "_region_tumor")}
    assert expected <= metrics.keys()
    assert not any(k.startswith(("val/hd95", "val/nsd")) for k in metrics)
    assert not any(k.startswith("test/") for k in metrics)  # 80/20: no test split
    split = json.loads((tmp_path / "data" / "kits23" / "splits.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (4, 1, 0)


def test_residual_unet_hipmri_stops_when_every_class_is_reached(tmp_path):
    paper = paper_config(tmp_path, "residual_unet_hipmri")
    assert paper.model._target_ == "volseg.models.residual_unet3d.ResidualUNet3D"
    assert paper.data.num_classes == 6
    assert (paper.data.split.val, paper.data.split.test) == (0.1, 0.1)
    assert paper.callbacks.early_stopping is None
    assert paper.callbacks.all_classes_reached.threshold == 0.7

    root = tmp_path / "data" / "hipmri"
    for name in ("Case_001_Week0", "Case_001_Week1", "Case_002_Week0", "Case_003_Week0",
                 "Case_004_Week0"):
        test_hipmri.write_scan(root, name, shape=(16, 16, 8))
    # Threshold 0: every class is "reached" at the first validation, so 3 epochs end after 1.
    cfg, metrics = run(tmp_path, "residual_unet_hipmri", "model.features=4",
                       "model.num_levels=3", *patch(16), "trainer.max_epochs=3",
                       "callbacks.all_classes_reached.threshold=0.0")
    assert per_class(cfg, "test") <= metrics.keys() and len(per_class(cfg, "test")) == 5
    assert metrics["epochs"] == 1


def test_resnet50_5class_writes_predictions_and_reports(tmp_path):
    paper = paper_config(tmp_path, "resnet50_5class")
    assert paper.model._target_ == "volseg.models.resnet_seg.ResNetSeg"
    assert paper.model.depth == 50 and paper.data.in_channels == 2
    assert list(paper.loss.weight) == [0.1, 1.0, 1.0, 1.0, 1.0]
    assert (paper.optimizer.lr, paper.optimizer.weight_decay) == (1e-3, 1e-4)
    scheduler = paper.scheduler
    assert scheduler._target_ == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    assert (scheduler.factor, scheduler.patience, scheduler.min_lr) == (0.5, 5, 1e-6)
    assert paper.module.scheduler_monitor == "val/loss"
    assert paper.trainer.gradient_clip_val == 1.0
    assert (paper.data.split.val, paper.data.split.test) == (0.15, 0.15)

    root = tmp_path / "data" / "nifti_folder"
    for i in range(7):  # 70/15/15 of seven volumes: 5/1/1
        test_nifti_folder.write_pair(root, f"volume{i}")
    cfg, metrics = run(tmp_path, "resnet50_5class", "model.features=4", *patch(16, x=32))
    assert per_class(cfg, "test") <= metrics.keys()
    written = sorted((Path(cfg.paths.output_dir) / "predictions").glob("*.nii.gz"))
    split = json.loads((root / "splits.json").read_text())
    assert [p.name for p in written] == [f"{case}.nii.gz" for case in split["test"]]
    # The write-up's JSON report, written by the run: per-class IoU, the mean IoU with and
    # without background, and each prediction's shape.
    report = json.loads((Path(cfg.paths.output_dir) / "evaluation" / "evaluation.json")
                        .read_text())
    assert report["failed"] == [] and [c["case"] for c in report["cases"]] == split["test"]
    (case,) = report["cases"]
    assert case["shape"] == [6, 5, 4]  # test_nifti_folder.write_pair's volumes
    assert list(case["metrics"]["iou"]) == list(cfg.data.class_names)  # background included
    # One case: each class mean is that case's IoU (None where undefined); the means by hand.
    ious = [v for v in case["metrics"]["iou"].values() if v is not None]
    foreground = [v for k, v in case["metrics"]["iou"].items()
                  if v is not None and k != "background"]
    assert report["mean"]["all_classes"]["iou"] == pytest.approx(sum(ious) / len(ious))
    assert report["mean"]["foreground"]["iou"] == pytest.approx(
        sum(foreground) / len(foreground))
    # Checked against the written files themselves: class 1's IoU by hand.
    prediction = nib.load(written[0]).get_fdata().astype(int)
    reference = nib.load(root / "labels" / written[0].name).get_fdata().astype(int)
    p, r = prediction == 1, reference == 1
    if (p | r).any():
        assert case["metrics"]["iou"][cfg.data.class_names[1]] == pytest.approx(
            (p & r).sum() / (p | r).sum())
