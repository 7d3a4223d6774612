import numpy as np
import pytest
import torch
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


def test_sparse_labels_score_annotated_voxels_only():
    loss = {"_target_": "volseg.losses.DiceCELoss", "ignore_index": 255}
    module = SegmentationModule(
        net=NET, loss=loss, optimizer=ADAM, scheduler=None, class_names=["bg", "a", "b"],
        preprocessing={"spacing": None}, inference={"tile_size": [8, 8, 8]}, ignore_index=255)
    target = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    target[0, :3] = 1
    pred = target.clone()
    pred[0, 3:] = 1  # wrong, but only where the target is unannotated
    target[0, 3:] = 255
    logged = _logged_metrics(module, pred, target, [1.0, 1.0, 1.0])
    assert logged["val/dice_a"] == 1.0
    # Surfaces of a partly annotated case are unknown: no distance is recorded.
    assert np.isnan(logged["val/hd95_a"])


def test_loss_must_ignore_the_data_ignore_index():
    with pytest.raises(ValueError, match="loss.ignore_index=255"):
        _module(ignore_index=255)
