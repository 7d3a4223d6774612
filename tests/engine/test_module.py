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
        net=kwargs.get("net", NET), loss=LOSS, optimizer=ADAM, scheduler=scheduler,
        class_names=["background", "a", "b"], preprocessing={"spacing": None},
        inference={"tile_size": [8, 8, 8], "overlap": 0.5})


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
