import pytest
import torch
from hydra.utils import instantiate
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from tests.conftest import CONF_DIR
from tests.models.config_defaults import resolved_config_with_defaults
from tests.models.deep_supervision import check_deep_supervision
from volseg.models.resunet import ResUNet

CONFIG = CONF_DIR / "model" / "resunet.yaml"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [18, 34])
def test_output_at_full_resolution(depth):
    model = ResUNet(1, 3, depth=depth, features=4)
    assert model.divisor == 32
    out = model(torch.randn(1, 1, 32, 32, 64))
    assert out.shape == (1, 3, 32, 32, 64)


@pytest.mark.parametrize(
    ("kwargs", "divisor"),
    [
        ({"stem_pool": False}, 16),
        ({"stem_stride": 1}, 16),
        ({"stem_stride": 1, "stem_pool": False}, 8),
    ],
)
def test_stem_variants_keep_full_resolution(kwargs, divisor):
    model = ResUNet(2, 4, features=4, **kwargs)
    assert model.divisor == divisor
    assert model(torch.randn(2, 2, divisor, 2 * divisor, divisor)).shape == (
        2,
        4,
        divisor,
        2 * divisor,
        divisor,
    )


def test_stride_one_stem_gives_a_full_resolution_skip():
    with_skip = ResUNet(1, 2, features=4, stem_stride=1)
    without = ResUNet(1, 2, features=4)
    # The last decoder step concatenates the stem's 4 channels only when the stem is unstrided.
    assert with_skip.decoders[-1][0][0].in_channels == 4 + 4
    assert without.decoders[-1][0][0].in_channels == 4


def test_rejects_non_divisible_size_naming_the_divisor():
    model = ResUNet(1, 2, features=4)
    with pytest.raises(ValueError, match="divisor=32"):
        model(torch.randn(1, 1, 32, 48, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, X, Y, Z\)"):
        model(torch.randn(1, 2, 32, 32, 32))


@pytest.mark.parametrize(
    ("norm", "act", "depth"),
    [
        ("batch", "relu", 18),
        ("instance", "leaky_relu", 34),
        ("group", "prelu", 18),
        ("none", "gelu", 18),
    ],
)
def test_backward_reaches_every_parameter(norm, act, depth):
    torch.manual_seed(0)
    # No max pool, so the deepest features are 1x1x2 and instance norm has voxels to normalise.
    model = ResUNet(2, 3, depth=depth, features=4, norm=norm, act=act, stem_pool=False)
    out = model(torch.randn(2, 2, 16, 16, 32))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_train_and_eval_modes():
    torch.manual_seed(0)
    model = ResUNet(1, 2, features=4, dropout=0.3, stem_pool=False, norm="batch")
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    x = torch.randn(3, 1, 16, 16, 32)

    model.train()
    before = bn.running_mean.clone()
    out_train = model(x)
    assert not torch.equal(bn.running_mean, before)
    assert any(isinstance(m, nn.Dropout3d) for m in model.modules())

    model.eval()
    stats = bn.running_mean.clone()
    with torch.no_grad():
        out_eval = model(x)
        alone = model(x[:1])
        again = model(x)
    assert torch.equal(bn.running_mean, stats)
    # Running statistics and no dropout: a sample ignores its batch mates (float32 tolerance).
    torch.testing.assert_close(alone, out_eval[:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, out_eval)
    assert not torch.allclose(out_eval, out_train)


def _conv_bn(cin: int, cout: int, k: int) -> int:
    return cin * cout * k**3 + 2 * cout


@pytest.mark.parametrize(("depth", "layers"), [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3])])
def test_parameter_count_encoder_from_monai_decoder_by_hand(depth, layers):
    f, cin, cout = 8, 1, 3
    encoder = monai_resnet.ResNet(
        "basic",
        layers,
        [f, 2 * f, 4 * f, 8 * f],
        n_input_channels=cin,
        conv1_t_size=7,
        conv1_t_stride=2,
        feed_forward=False,
        bias_downsample=False,
    )
    # (channels from below, skip channels, width) per decoder step, 1/16 up to full size.
    steps = [(8 * f, 4 * f, 4 * f), (4 * f, 2 * f, 2 * f), (2 * f, f, f), (f, f, f), (f, 0, f // 2)]
    decoder = sum(
        below * below * 8 + _conv_bn(below + skip, w, 3) + _conv_bn(w, w, 3)
        for below, skip, w in steps
    )
    head = (f // 2) * cout + cout
    model = ResUNet(cin, cout, depth=depth, features=f)
    assert _n_params(model.encoder) == _n_params(encoder)
    assert _n_params(model) == _n_params(encoder) + decoder + head


def test_parameter_count_full_width_resnet18():
    # The figure quoted in the class docstring (KiTS23: 1 CT channel, 3 classes).
    with torch.device("meta"):  # counts without allocating 46 M floats
        assert _n_params(ResUNet(1, 3, depth=18)) == 45_684_771


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 50}, r"depth must be one of \(18, 34\)"),
        ({"features": 0}, "features"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"act": "tanh"}, "act must be one of"),
        ({"dropout": 1.0}, "dropout"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"stem_stride": 4}, "stem_stride must be one of"),
        ({"stem_kernel": 6}, "stem_kernel"),
        ({"deep_supervision": 0}, "deep_supervision must be True or False"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResUNet(**{"in_channels": 1, "out_channels": 2, "features": 2, **kwargs})


def test_hydra_config_instantiates_with_constructor_defaults():
    node = resolved_config_with_defaults(CONFIG, ResUNet, 1, 3)
    model = instantiate({**node, "features": 2})
    assert isinstance(model, ResUNet)
    assert model(torch.zeros(2, 1, 64, 32, 32)).shape == (2, 3, 64, 32, 32)
    # 32 cubed is one voxel at the bottom: instance norm there would silently give the bias.
    with pytest.raises(ValueError, match="at least 64 voxels along one axis"):
        model(torch.zeros(2, 1, 32, 32, 32))


def test_deep_supervision_one_output_per_decoder_step():
    # ResNet-18, features 4: decoder steps at 1/16 (16 channels, stage-3 skip), 1/8 (8), 1/4
    # (4), 1/2 (4, the stem's skip) and full resolution (features // 2 = 2), so 5 outputs
    # down to 1/16; extra heads on the four steps below full resolution, to 3 classes.
    check_deep_supervision(
        lambda ds: ResUNet(1, 3, features=4, deep_supervision=ds),
        torch.randn(1, 1, 32, 32, 64),
        num_outputs=5,
        head_params=(4 * 3 + 3) + (4 * 3 + 3) + (8 * 3 + 3) + (16 * 3 + 3),
    )
