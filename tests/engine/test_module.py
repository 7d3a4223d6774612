import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from volseg.engine import SegmentationModule

NET = {"_target_": "volseg.models.UNet3D", "in_channels": 1, "out_channels": 3, "features": 2,
       "num_levels": 2}
LOSS = {"_target_": "volseg.losses.DiceCELoss"}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}
PLATEAU = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True}


def _module(scheduler=None, **kwargs):
    return SegmentationModule(
        net=kwargs.pop("net", NET), loss=LOSS, optimizer=ADAM, scheduler=scheduler,
        class_names=kwargs.pop("class_names", ["background", "a", "b"]),
        preprocessing={"spacing": None}, inference={"tile_size": [8, 8, 8], "overlap": 0.5},
        **kwargs)


def _logged_metrics(module, pred, target, spacing) -> dict[str, float]:
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    module._update_metrics(module.val_metrics, pred, target, spacing)
    module._log_metrics(module.val_metrics, "val")
    return logged


def test_logs_per_class_and_region_metrics():
    # Class 1 is a 2x2x2 cube predicted exactly; class 2 a 2x2x2 cube predicted as class 1.
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 1:3, 1:3, 1:3] = 1
    target[0, 5:7, 5:7, 5:7] = 2
    pred = target.clone()
    pred[pred == 2] = 1
    module = _module(regions={"both": [1, 2], "second": [2]})
    logged = _logged_metrics(module, pred, target, [1.0, 1.0, 2.0])
    # Class 1: pred 16 voxels, target 8, overlap 8 -> Dice 2*8/24. Class 2: missed -> 0.
    assert logged["val/dice_a"] == pytest.approx(2 / 3)
    assert logged["val/dice_b"] == 0.0
    assert logged["val/dice"] == pytest.approx(1 / 3)
    # The union of 1 and 2 is predicted exactly; region "second" is missed entirely.
    assert logged["val/dice_region_both"] == 1.0
    assert logged["val/hd95_region_both"] == 0.0
    assert logged["val/nsd_region_both"] == 1.0
    assert logged["val/dice_region_second"] == 0.0
    # Missed entirely: the penalty is the image diagonal, sqrt(8^2 + 8^2 + 16^2) mm.
    assert logged["val/hd95_region_second"] == pytest.approx((64 + 64 + 256) ** 0.5)


def test_binary_segmentation_logs_its_one_class():
    target = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    target[0, 2:4, 2:4, 2:4] = 1
    module = _module(class_names=["background", "nodule"],
                     net={**NET, "out_channels": 2})
    logged = _logged_metrics(module, target, target, [1.0, 1.0, 1.0])
    assert logged["val/dice_nodule"] == 1.0 and logged["val/dice"] == 1.0
    assert logged["val/hd95_nodule"] == 0.0


@pytest.mark.parametrize(
    ("regions", "message"),
    [({"kidney": [0, 1]}, "foreground classes"), ({"bad name": [1]}, "plain name"),
     ({"empty": []}, "at least one label")],
)
def test_bad_regions_are_refused(regions, message):
    with pytest.raises(ValueError, match=message):
        _module(regions=regions)


def test_plateau_scheduler_monitors_val_loss():
    config = _module(PLATEAU).configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"],
                      torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config["lr_scheduler"]["monitor"] == "val/loss"
    assert config["optimizer"].param_groups[0]["lr"] == 0.01


def test_no_scheduler_returns_the_optimizer():
    assert isinstance(_module(None).configure_optimizers(), torch.optim.Adam)
    assert isinstance(_module({}).configure_optimizers(), torch.optim.Adam)


def test_hyperparameters_are_plain_data():
    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(dict(_module(PLATEAU).hparams))


class _DeepSupervised(nn.Module):
    """Returns full resolution first, then a half-resolution map."""

    def __init__(self, in_channels: int = 1, out_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x):
        y = self.conv(x)
        return [y, y[..., ::2, ::2, ::2]]


def test_sliding_window_uses_the_full_resolution_output(monkeypatch):
    import volseg.models

    monkeypatch.setattr(volseg.models, "DeepSupervised", _DeepSupervised, raising=False)
    # The allow-list checks where a class is defined, not only the name it is reached by.
    monkeypatch.setattr(_DeepSupervised, "__module__", "volseg.models")
    module = _module(net={"_target_": "volseg.models.DeepSupervised"}).eval()
    image = torch.rand(1, 1, 12, 10, 9)
    with torch.no_grad():
        logits = module.predict_logits(image)
        expected = module.net.conv(image)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_channels_last_changes_layout_not_results():
    torch.manual_seed(0)
    plain = _module()
    fast = SegmentationModule(**{**plain.hparams, "channels_last": True})
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.net.modules() if isinstance(m, nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    image = torch.rand(2, 1, 8, 12, 16)
    torch.testing.assert_close(fast(image), plain(image), atol=1e-5, rtol=1e-4)


VALID_NET = {"_target_": "volseg.models.UNet3D", "in_channels": 1, "out_channels": 3,
             "features": 2, "num_levels": 2, "padding": "valid", "norm": "none"}


def test_valid_padding_crops_the_target_and_pads_tiles():
    """Çiçek's unpadded mode, one pooling: 20 -(2 convs)-> 16 -(pool)-> 8 -(2 convs)-> 4
    -(up)-> 8 -(2 convs)-> 4 voxels per axis."""
    module = SegmentationModule(
        net=VALID_NET, loss=LOSS, optimizer=ADAM, scheduler=None,
        class_names=["background", "a", "b"], preprocessing={"spacing": None},
        inference={"tile_size": [20, 20, 20], "overlap": 0.5})
    assert module.net.output_shape((20, 20, 20)) == (4, 4, 4)
    image = torch.rand(1, 1, 20, 20, 20)
    label = torch.randint(0, 3, (1, 20, 20, 20))
    loss = module.training_step({"image": image, "label": label}, 0)
    expected = module.loss(module(image), label[:, 8:12, 8:12, 8:12])  # the centre 4^3
    torch.testing.assert_close(loss, expected)
    module.eval()
    with torch.no_grad():
        logits = module.predict_logits(torch.rand(1, 1, 13, 11, 9))
    assert logits.shape == (1, 3, 13, 11, 9)


def test_deep_supervision_trains_on_every_scale_and_predicts_one():
    module = SegmentationModule(
        net={"_target_": "volseg.models.ResidualUNet3D", "in_channels": 1, "out_channels": 3,
             "features": 2, "num_levels": 3, "deep_supervision": True},
        loss={"_target_": "volseg.losses.DeepSupervisionLoss",
              "loss": {"_target_": "volseg.losses.DiceCELoss"}},
        optimizer=ADAM, scheduler=None, class_names=["background", "a", "b"],
        preprocessing={"spacing": None}, inference={"tile_size": [8, 8, 8]})
    batch = {"image": torch.rand(2, 1, 8, 8, 8), "label": torch.randint(0, 3, (2, 8, 8, 8))}
    assert isinstance(module(batch["image"]), list)
    module.training_step(batch, 0).backward()
    heads = [p for n, p in module.net.named_parameters() if p.grad is None]
    assert heads == []  # every segmentation layer got a gradient
    module.eval()
    with torch.no_grad():
        assert module.predict_logits(torch.rand(1, 1, 12, 8, 8)).shape == (1, 3, 12, 8, 8)


def test_loss_must_ignore_the_data_ignore_index():
    with pytest.raises(ValueError, match="loss.ignore_index=255"):
        _module(ignore_index=255)


def test_default_metrics_keep_their_names():
    target = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    target[0, 1:3, 1:3, 1:3], target[0, 3:5, 3:5, 3:5] = 1, 2
    module = _module(regions={"both": [1, 2]})
    logged = _logged_metrics(module, target, target, [1.0, 1.0, 1.0])
    names = {f"val/{m}{suffix}" for m in ("dice", "hd95", "nsd")
             for suffix in ("", "_a", "_b", "_region_both")}
    assert logged.keys() == names


@pytest.mark.parametrize("metrics", [["dice", "jaccard"], ["dice", "dice"], "dice", []])
def test_bad_metric_lists_are_refused(metrics):
    with pytest.raises(ValueError, match=r"module\.metrics.*dice, iou, volume_similarity, "
                                         r"hausdorff, hd95, assd, nsd"):
        _module(metrics=metrics)


def test_surface_metrics_off_drops_the_distance_metrics_only():
    module = _module(metrics=["iou", "hausdorff", "volume_similarity", "assd", "nsd"],
                     surface_metrics=False)
    assert list(module.val_metrics) == ["iou", "volume_similarity"]
    with pytest.raises(ValueError, match="nothing left to score"):
        _module(metrics=["hd95"], surface_metrics=False)


def test_sparse_labels_keep_overlap_metrics_and_skip_distances():
    loss = {"_target_": "volseg.losses.DiceCELoss", "ignore_index": 255}
    module = SegmentationModule(
        net=NET, loss=loss, optimizer=ADAM, scheduler=None, class_names=["bg", "a", "b"],
        preprocessing={"spacing": None}, inference={"tile_size": [8, 8, 8]}, ignore_index=255,
        metrics=["dice", "iou", "volume_similarity", "hausdorff"])
    target = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    target[0, :3] = 1
    pred = target.clone()
    pred[0, 3:] = 1  # wrong, but only where the target is unannotated
    target[0, 3:] = 255
    logged = _logged_metrics(module, pred, target, [1.0, 1.0, 1.0])
    assert logged["val/dice_a"] == logged["val/iou_a"] == 1.0
    assert logged["val/volume_similarity_a"] == 1.0
    # Surfaces of a partly annotated case are unknown: no distance is recorded.
    assert np.isnan(logged["val/hausdorff_a"])


def _sitk_mask(mask: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.T.astype(np.uint8))  # sitk indexes (z, y, x)
    image.SetSpacing(spacing)
    return image


def test_validation_logs_iou_volume_similarity_and_hausdorff_as_simpleitk(monkeypatch):
    """One validation batch through ``validation_step``, per class and per region, against
    SimpleITK's label overlap measures and Hausdorff distance at an anisotropic spacing."""
    spacing = (0.8, 1.0, 2.5)
    target = torch.zeros(1, 12, 10, 8, dtype=torch.long)
    target[0, 2:6, 2:6, 1:4] = 1
    target[0, 7:10, 5:8, 4:7] = 2
    pred = torch.zeros_like(target)
    pred[0, 3:7, 2:6, 1:5] = 1   # moved on x, one slice longer on z
    pred[0, 7:10, 4:8, 4:6] = 2  # wider on y, one slice shorter on z
    pred[0, 11, 0, 7] = 1        # a stray voxel far from the kidney: sets the Hausdorff maximum
    module = _module(metrics=["iou", "volume_similarity", "hausdorff"],
                     regions={"both": [1, 2]})
    logits = F.one_hot(pred, 3).movedim(-1, 1).float()
    monkeypatch.setattr(module, "predict_logits", lambda image: logits)
    logged = {}
    monkeypatch.setattr(module, "log",
                        lambda name, value, **_: logged.__setitem__(name, float(value)))
    batch = {"image": torch.zeros(1, 1, *target.shape[1:]), "label": target,
             "meta": {"preprocessed": {"spacing": list(spacing)}}}
    module.validation_step(batch, 0)
    module.on_validation_epoch_end()

    p, t = pred[0].numpy(), target[0].numpy()
    masks = {"_a": (p == 1, t == 1), "_b": (p == 2, t == 2),
             "_region_both": (p > 0, t > 0)}
    for suffix, (p_mask, t_mask) in masks.items():
        overlap = sitk.LabelOverlapMeasuresImageFilter()
        overlap.Execute(_sitk_mask(t_mask, spacing), _sitk_mask(p_mask, spacing))
        hausdorff = sitk.HausdorffDistanceImageFilter()
        hausdorff.Execute(_sitk_mask(p_mask, spacing), _sitk_mask(t_mask, spacing))
        assert logged[f"val/iou{suffix}"] == pytest.approx(overlap.GetJaccardCoefficient(1))
        # SimpleITK's volume similarity is the signed 2(|T|-|S|)/(|T|+|S|).
        assert logged[f"val/volume_similarity{suffix}"] == pytest.approx(
            1 - abs(overlap.GetVolumeSimilarity(1)) / 2)
        assert logged[f"val/hausdorff{suffix}"] == pytest.approx(
            hausdorff.GetHausdorffDistance(), rel=1e-6)
    # Worked by hand for class b: 27 target voxels, 24 predicted, 18 shared.
    assert logged["val/iou_b"] == pytest.approx(18 / 33)
    assert logged["val/volume_similarity_b"] == pytest.approx(1 - 3 / 51)
    assert logged["val/iou"] == pytest.approx((logged["val/iou_a"] + logged["val/iou_b"]) / 2)
    assert {k for k in logged if k.startswith("val/dice")} == set()


def test_warmup_ramps_the_learning_rate_linearly_then_holds_it():
    import pytorch_lightning as pl

    class Recorder(pl.Callback):
        def __init__(self):
            self.rates = []

        def on_train_batch_end(self, trainer, *args):
            self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = _module(warmup_steps=4)
    batch = {"image": torch.randn(1, 1, 8, 8, 8), "label": torch.randint(0, 3, (1, 8, 8, 8))}
    recorder = Recorder()
    trainer = pl.Trainer(max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[recorder], limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * 6, batch_size=None))
    # lr 0.01 (ADAM): 1/4, 2/4, 3/4 of it, then the full rate from step 4 on.
    assert recorder.rates == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    with pytest.raises(ValueError, match="module.warmup_steps"):
        _module(warmup_steps=-1)
