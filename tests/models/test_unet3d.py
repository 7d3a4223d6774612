import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import CONF_DIR
from tests.models.config_defaults import resolved_config_with_defaults
from tests.models.deep_supervision import check_deep_supervision
from volseg.models import UNet3D

CONFIG = CONF_DIR / "model" / "unet3d.yaml"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_same_padding_keeps_spatial_size():
    model = UNet3D(1, 3, features=4, num_levels=3)
    out = model(torch.randn(1, 1, 16, 24, 32))
    assert out.shape == (1, 3, 16, 24, 32)
    assert model.divisor == 4
    assert model.output_shape((16, 24, 32)) == (16, 24, 32)


def test_divisor_is_two_to_the_poolings():
    assert UNet3D(1, 2, features=2, num_levels=2).divisor == 2
    assert UNet3D(1, 2, features=2, num_levels=4).divisor == 8


def test_same_padding_rejects_non_divisible_size():
    model = UNet3D(1, 2, features=4, num_levels=3)
    with pytest.raises(ValueError, match=r"divisor=4.*\(16, 24, 30\)"):
        model(torch.randn(1, 1, 16, 24, 30))


def test_forward_rejects_wrong_channels_or_rank():
    model = UNet3D(2, 2, features=2, num_levels=2)
    with pytest.raises(ValueError, match=r"expected input \(N, 2, X, Y, Z\)"):
        model(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"expected input"):
        model(torch.randn(2, 8, 8, 8))


@pytest.mark.parametrize(
    ("norm", "act", "padding", "size"),
    [
        ("batch", "relu", "same", (8, 16, 12)),
        ("instance", "leaky_relu", "same", (8, 16, 12)),
        ("group", "prelu", "same", (8, 16, 12)),
        ("none", "gelu", "valid", (44, 52, 60)),  # output (4, 12, 20), worked out below
    ],
)
def test_backward_reaches_every_parameter(norm, act, padding, size):
    torch.manual_seed(0)
    model = UNet3D(2, 3, features=4, num_levels=3, norm=norm, act=act, padding=padding)
    out = model(torch.randn(2, 2, *size))
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_train_and_eval_modes_with_batch_norm():
    torch.manual_seed(0)
    model = UNet3D(1, 2, features=4, num_levels=3, norm="batch", dropout=0.3)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    x = torch.randn(3, 1, 8, 8, 8)

    model.train()
    mean_before = bn.running_mean.clone()
    out_train = model(x)
    assert not torch.equal(bn.running_mean, mean_before)  # training updates the statistics
    assert out_train.shape == (3, 2, 8, 8, 8)

    model.eval()
    stats = bn.running_mean.clone()
    with torch.no_grad():
        out_eval = model(x)
        alone = model(x[:1])
    assert torch.equal(bn.running_mean, stats)  # evaluation leaves them alone
    # Eval uses running statistics and no dropout: a sample's output ignores its batch mates
    # and repeats exactly. 1e-5: float32 reduction order differs between batch sizes.
    torch.testing.assert_close(alone, out_eval[:1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out_eval)
    assert not torch.allclose(out_eval, out_train)


def _conv(cin: int, cout: int, kernel: int, bias: bool) -> int:
    return cin * cout * kernel**3 + (cout if bias else 0)


def test_parameter_count_matches_paper_figure_1():
    """Çiçek et al. 2016 state 19,069,955 parameters (3 input channels, 3 labels)."""
    # (in, out) of the 3x3x3 convs, read off Fig. 1 of the paper.
    analysis = [
        (3, 32),
        (32, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 512),
    ]
    synthesis = [
        (512 + 256, 256),
        (256, 256),
        (256 + 128, 128),
        (128, 128),
        (128 + 64, 64),
        (64, 64),
    ]
    up_channels = [512, 256, 128]  # 2x2x2 up-convolutions keep the channel count, no bias
    convs = analysis + synthesis
    weights = (
        sum(_conv(i, o, 3, bias=False) for i, o in convs)
        + sum(_conv(c, c, 2, bias=False) for c in up_channels)
        + _conv(64, 3, 1, bias=False)
    )
    assert weights == 19_067_616
    conv_channels = sum(o for _, o in convs)  # 2,336 output channels of 3x3x3 convs
    head_bias = 3

    # No norm: a bias per conv output channel; this is exactly the paper's number.
    plain = UNet3D(3, 3, features=32, num_levels=4, norm="none")
    assert _n_params(plain) == weights + conv_channels + head_bias == 19_069_955

    # Batch norm: the conv biases go, each conv channel gains a BN scale and shift.
    with_bn = UNet3D(3, 3, features=32, num_levels=4, norm="batch")
    assert _n_params(with_bn) == weights + 2 * conv_channels + head_bias == 19_072_291


def test_valid_output_shape_paper_tile():
    # Hand-worked, 4 levels, two unpadded 3x3x3 convs (-4) per level:
    #   132: -4=128, /2=64, -4=60, /2=30, -4=26, /2=13, -4=9 (bottom),
    #        x2=18, -4=14, x2=28, -4=24, x2=48, -4=44
    #   116: -4=112, /2=56, -4=52, /2=26, -4=22, /2=11, -4=7 (bottom),
    #        x2=14, -4=10, x2=20, -4=16, x2=32, -4=28
    # which is the paper's 132x132x116 input tile -> 44x44x28 output.
    model = UNet3D(1, 2, features=2, num_levels=4, padding="valid")
    assert model.output_shape((132, 132, 116)) == (44, 44, 28)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 132, 132, 116)).shape == (1, 2, 44, 44, 28)


def test_valid_output_shape_matches_forward_small():
    # 2 levels: s -> (s - 4) / 2 - 4 -> x2 - 4.
    #   20 -> 16 -> 8 -> 4 -> 8 -> 4;  22 -> 18 -> 9 -> 5 -> 10 -> 6;
    #   24 -> 20 -> 10 -> 6 -> 12 -> 8
    model = UNet3D(1, 1, features=2, num_levels=2, padding="valid")
    assert model.output_shape((20, 22, 24)) == (4, 6, 8)
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 20, 22, 24)).shape == (1, 1, 4, 6, 8)
    # 3 levels: 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> 8 -> 4 -> 8 -> 4
    #           52 -> 48 -> 24 -> 20 -> 10 -> 6 -> 12 -> 8 -> 16 -> 12
    #           60 -> 56 -> 28 -> 24 -> 12 -> 8 -> 16 -> 12 -> 24 -> 20
    #           28 -> 24 -> 12 -> 8 -> 4 -> 0 at the bottom: too small
    deep = UNet3D(1, 1, features=2, num_levels=3, padding="valid")
    assert deep.output_shape((44, 52, 60)) == (4, 12, 20)
    with torch.no_grad():
        assert deep(torch.zeros(1, 1, 44, 52, 60)).shape == (1, 1, 4, 12, 20)
    with pytest.raises(ValueError, match="too small"):
        deep.output_shape((44, 44, 28))


def test_valid_skip_is_centre_cropped():
    # With mirror-symmetric (constant) kernels every layer commutes with flipping a spatial
    # axis: unpadded convs, 2x2x2 pooling and up-convolution on even sizes, and a crop taken
    # from the centre. A skip crop off the centre (e.g. from the corner) breaks that symmetry.
    model = UNet3D(1, 1, features=2, num_levels=3, padding="valid", norm="none")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                m.bias.zero_()
            elif isinstance(m, nn.ConvTranspose3d):
                m.weight.fill_(1.0 / m.weight.shape[0])
        torch.manual_seed(0)
        x = torch.rand(1, 1, 44, 52, 60)
        out = model(x)
        assert out.shape == (1, 1, 4, 12, 20)
        for axes in ([2], [3], [4], [2, 3, 4]):
            # Same sums in another order: float32 rounding only.
            torch.testing.assert_close(model(x.flip(axes)), out.flip(axes), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((8, 8, 8), "too small"), ((133, 132, 116), r"odd size 129"), ((132, 132), "3 spatial")],
)
def test_valid_output_shape_errors(shape, match):
    model = UNet3D(1, 2, features=2, num_levels=4, padding="valid")
    with pytest.raises(ValueError, match=match):
        model.output_shape(shape)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0}, r"in_channels must be >= 1"),
        ({"out_channels": 0}, r"out_channels must be >= 1"),
        ({"features": 0}, r"features must be >= 1"),
        ({"num_levels": 1}, r"num_levels must be >= 2"),
        ({"norm": "layer"}, r"norm must be one of .*'batch'.*'instance'.*'group'.*'none'"),
        ({"act": "tanh"}, r"act must be one of .*'relu'"),
        ({"padding": "reflect"}, r"padding must be one of \('same', 'valid'\)"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.5}, r"dropout must be in \[0, 1\)"),
        ({"deep_supervision": 1}, r"deep_supervision must be True or False, got 1"),
        ({"deep_supervision": True, "padding": "valid"}, r"deep_supervision=True needs padding"),
    ],
)
def test_argument_validation(kwargs, match):
    args = {"in_channels": 1, "out_channels": 2, "features": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        UNet3D(**args)


def test_hydra_config_instantiates_with_constructor_defaults():
    node = resolved_config_with_defaults(CONFIG, UNet3D, 2, 4)
    model = instantiate({**node, "features": 2, "num_levels": 2})
    assert isinstance(model, UNet3D)
    assert model(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 4, 4, 4, 4)


def test_deep_supervision_one_output_per_synthesis_level():
    # Four levels: full, 1/2 and 1/4 resolution outputs on a non-cubic input (pooling is
    # isotropic, so every axis halves). Extra heads on the 1/2 and 1/4 levels, whose outputs
    # have 2c = 8 and 16 channels: 1x1x1 convs to 3 classes with bias.
    check_deep_supervision(
        lambda ds: UNet3D(1, 3, features=2, num_levels=4, deep_supervision=ds),
        torch.randn(1, 1, 8, 16, 24),
        num_outputs=3,
        head_params=(8 * 3 + 3) + (16 * 3 + 3),
    )
