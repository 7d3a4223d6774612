import pytest
import torch
from hydra.utils import instantiate
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from tests.conftest import CONF_DIR
from tests.models.config_defaults import resolved_config_with_defaults
from tests.models.deep_supervision import check_deep_supervision
from volseg.models.resnet_seg import ResNetSeg

CONFIG = CONF_DIR / "model" / "resnet_seg.yaml"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_at_full_resolution():
    model = ResNetSeg(2, 5, features=4)
    assert model.divisor == 16
    # The write-up's volumes are 512 x 1024 x 32; this keeps their 1 : 2 : 1/16 proportions small.
    out = model(torch.randn(1, 2, 32, 64, 16))
    assert out.shape == (1, 5, 32, 64, 16)


def test_resnet101_forward():
    model = ResNetSeg(1, 2, depth=101, features=2)
    assert len(model.encoder.stages[2]) == 23
    assert model(torch.randn(1, 1, 16, 16, 32)).shape == (1, 2, 16, 16, 32)


def test_encoder_reaches_one_sixteenth():
    model = ResNetSeg(2, 5, features=4)
    features = model.encoder(torch.randn(2, 2, 16, 16, 32))
    # Stage outputs are 4 * features * [1, 2, 4, 8] (256 .. 2048 at features=64).
    assert [f.shape[1] for f in features] == [4, 16, 32, 64, 128]
    assert features[-1].shape[2:] == (1, 1, 2)


def test_rejects_non_divisible_size_naming_the_divisor():
    model = ResNetSeg(2, 5, features=4)
    with pytest.raises(ValueError, match="divisor=16"):
        model(torch.randn(1, 2, 32, 32, 24))
    with pytest.raises(ValueError, match=r"\(N, 2, X, Y, Z\)"):
        model(torch.randn(1, 1, 32, 32, 32))


@pytest.mark.parametrize(
    ("norm", "act", "depth"),
    [
        ("batch", "relu", 50),
        ("instance", "leaky_relu", 50),
        ("group", "prelu", 50),
        ("none", "gelu", 50),
    ],
)
def test_backward_reaches_every_parameter(norm, act, depth):
    torch.manual_seed(0)
    model = ResNetSeg(2, 5, depth=depth, features=4, norm=norm, act=act)
    # Deepest features 1x1x2: two voxels, enough for instance norm.
    out = model(torch.randn(2, 2, 16, 16, 32))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_train_and_eval_modes():
    torch.manual_seed(0)
    model = ResNetSeg(2, 5, features=4, dropout=0.3, norm="batch")
    bn = next(m for m in model.decoder.modules() if isinstance(m, nn.BatchNorm3d))
    x = torch.randn(3, 2, 16, 16, 32)

    model.train()
    before = bn.running_mean.clone()
    out_train = model(x)
    assert not torch.equal(bn.running_mean, before)
    assert sum(isinstance(m, nn.Dropout3d) for m in model.modules()) == 4

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


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_parameter_count_encoder_from_monai_decoder_by_hand(norm):
    f, cin, cout = 4, 2, 5
    encoder = monai_resnet.ResNet(
        "bottleneck",
        [3, 4, 6, 3],
        [f, 2 * f, 4 * f, 8 * f],
        n_input_channels=cin,
        conv1_t_size=7,
        conv1_t_stride=2,
        no_max_pool=True,
        feed_forward=False,
        bias_downsample=False,
    )
    model = ResNetSeg(cin, cout, features=f, norm=norm)
    # 2x2x2 transposed convs 32f -> 8f -> 4f -> 2f -> f, each followed by a BN (scale + shift)
    # or, without a norm, carrying a bias.
    per_channel = 2 if norm == "batch" else 1
    decoder = sum(
        a * b * 8 + per_channel * b
        for a, b in [(32 * f, 8 * f), (8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f)]
    )
    head = f * cout + cout
    if norm == "batch":
        assert _n_params(model.encoder) == _n_params(encoder)
    assert _n_params(model) - _n_params(model.encoder) == decoder + head


def test_parameter_count_full_width():
    # The figure in the class docstring, next to the write-up's "~26 million". The meta
    # device counts the parameters without allocating or initialising 56 M floats.
    with torch.device("meta"):
        assert _n_params(ResNetSeg(2, 5)) == 55_944_133


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 18}, r"depth must be one of \(50, 101\)"),
        ({"features": 0}, "features"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"act": "tanh"}, "act must be one of"),
        ({"dropout": -0.1}, "dropout"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"stem_kernel": 2}, "stem_kernel"),
        ({"deep_supervision": None}, "deep_supervision must be True or False"),
    ],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetSeg(**{"in_channels": 2, "out_channels": 5, "features": 2, **kwargs})


def test_hydra_config_instantiates_with_constructor_defaults():
    node = resolved_config_with_defaults(CONFIG, ResNetSeg, 2, 5)
    model = instantiate({**node, "features": 2})
    assert isinstance(model, ResNetSeg)
    assert model(torch.zeros(2, 2, 16, 16, 32)).shape == (2, 5, 16, 16, 32)


def test_deep_supervision_one_output_per_decoder_block():
    # features 2: the decoder blocks give 16, 8, 4 and 2 channels at 1/8, 1/4, 1/2 and full
    # resolution; extra heads on the three below full resolution, to 5 classes with bias.
    # Dropout makes a decoder block 4 layers instead of 3, which the heads must follow.
    check_deep_supervision(
        lambda ds: ResNetSeg(2, 5, features=2, dropout=0.2, deep_supervision=ds),
        torch.randn(1, 2, 16, 16, 32),
        num_outputs=4,
        head_params=(4 * 5 + 5) + (8 * 5 + 5) + (16 * 5 + 5),
    )
