import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR
from volseg.models import DynamicUNet

ANISOTROPIC = {"features": [4, 8, 16], "strides": [1, [2, 2, 1], 2],
               "kernel_sizes": [[3, 3, 1], 3, 3]}


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_worked_by_hand():
    # Two levels, no norm (every conv keeps its bias), 3x3x3 kernels:
    # encoder 0: 1->2 (54 + 2), 2->2 (108 + 2); encoder 1: 2->4 (216 + 4), 4->4 (432 + 4);
    # up-convolution 4->2, 2x2x2, no bias (64); decoder 0: 4->2 (216 + 2), 2->2 (108 + 2);
    # head 2->2, 1x1x1 (4 + 2).
    net = DynamicUNet(1, 2, features=[2, 4], strides=[1, 2], kernel_sizes=[3, 3], norm="none",
                      act="relu")
    assert _parameters(net) == 56 + 110 + 220 + 436 + 64 + 218 + 110 + 6
    # Instance norm: the 8 conv-norm-act layers drop their 16 biases, gain 2 x 16 affine terms.
    assert _parameters(DynamicUNet(1, 2, [2, 4], [1, 2], [3, 3])) == 1220 - 16 + 32


def test_an_isotropic_plan_matches_monais_dynunet():
    monai = pytest.importorskip("monai.networks.nets")
    ours = DynamicUNet(2, 3, features=[4, 8, 16, 32], strides=[1, 2, 2, 2],
                       kernel_sizes=[3, 3, 3, 3])
    theirs = monai.DynUNet(3, 2, 3, kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2],
                           upsample_kernel_size=[2, 2, 2], filters=[4, 8, 16, 32],
                           norm_name=("INSTANCE", {"affine": True}))
    # By hand: 3x3x3 weights of the 14 conv-norm-act layers plus 2 affine terms per output
    # channel, 2x2x2 up-convolutions without bias, a 1x1x1 head with bias.
    layers = [(2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32),
              (32, 16), (16, 16), (16, 8), (8, 8), (8, 4), (4, 4)]
    by_hand = (sum(27 * a * b + 2 * b for a, b in layers)
               + 8 * (32 * 16 + 16 * 8 + 8 * 4) + 4 * 3 + 3)
    assert _parameters(ours) == _parameters(theirs) == by_hand == 88_039
    x = torch.randn(1, 2, 16, 24, 8)
    assert ours(x).shape == theirs.eval()(x).shape == (1, 3, 16, 24, 8)


def test_an_anisotropic_plan_pools_in_plane_first():
    net = DynamicUNet(1, 3, **ANISOTROPIC)
    assert net.divisors == (4, 4, 2) and net.divisor == 4
    x = torch.randn(2, 1, 16, 12, 6)
    sizes = []
    for level in net.encoder:
        x = level(x)
        sizes.append(tuple(x.shape[2:]))
    assert sizes == [(16, 12, 6), (8, 6, 6), (4, 3, 3)]
    assert net(torch.randn(2, 1, 16, 12, 6)).shape == (2, 3, 16, 12, 6)
    # The first level's 3x3x1 kernels: 1->4 and 4->4 weights of 9 taps each, and the decoder
    # level that returns to it uses them too (nnU-Net's PlainConvUNet; MONAI's DynUNet there
    # uses the coarser level's kernel, 864 more weights on this plan).
    assert net.encoder[0][0][0].weight.shape == (4, 1, 3, 3, 1)
    assert net.decoder[0][0][0].weight.shape == (4, 8, 3, 3, 1)
    monai = pytest.importorskip("monai.networks.nets")
    theirs = monai.DynUNet(3, 1, 3, kernel_size=ANISOTROPIC["kernel_sizes"],
                           strides=ANISOTROPIC["strides"], upsample_kernel_size=[[2, 2, 1], 2],
                           filters=[4, 8, 16], norm_name=("INSTANCE", {"affine": True}))
    assert _parameters(theirs) - _parameters(net) == 8 * 4 * 18 + 4 * 4 * 18


def test_deep_supervision_returns_every_decoder_level_in_training_only():
    net = DynamicUNet(1, 3, deep_supervision=True, **ANISOTROPIC)
    x = torch.randn(1, 1, 16, 12, 6)
    outputs = net.train()(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 12, 6), (8, 6, 6)]
    assert net.eval()(x).shape == (1, 3, 16, 12, 6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"features": [4, 8], "strides": [1, 2, 2]}, "one entry per level"),
    ({"features": [4], "strides": [1], "kernel_sizes": [3]}, "at least 2 levels"),
    ({"strides": [2, 2, 2]}, r"strides\[0\] must be 1"),
    ({"strides": [1, [2, 2], 2]}, r"strides\[1\] must be a positive integer or three"),
    ({"kernel_sizes": [3, [3, 3, 2], 3]}, "kernel_sizes must be odd"),
    ({"convs_per_stage": 0}, "convs_per_stage must be >= 1"),
    ({"norm": "layer"}, "norm must be one of"),
    ({"features": [4, 0, 16]}, "features must be >= 1"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicUNet(1, 2, **kwargs)


def test_an_input_off_the_stride_grid_is_refused_naming_the_axis():
    net = DynamicUNet(1, 2, **ANISOTROPIC)
    with pytest.raises(ValueError, match=r"y 10 \(a multiple of 4\)"):
        net(torch.randn(1, 1, 16, 10, 6))
    with pytest.raises(ValueError, match=r"expected \(N, 1, x, y, z\)"):
        net(torch.randn(1, 2, 16, 12, 6))


def test_the_config_lists_every_constructor_default():
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "dynamic_unet.yaml"))
    net = DynamicUNet(1, 2)
    built = DynamicUNet(1, 2, **{k: v for k, v in node.items()
                                 if k not in ("_target_", "in_channels", "out_channels")})
    assert _parameters(built) == _parameters(net)
    assert node["features"] == [4, 8, 16] and node["strides"] == [1, 2, 2]
    assert node["norm"] == "instance" and node["deep_supervision"] is False
