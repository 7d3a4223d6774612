import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import CONF_DIR
from tests.models.config_defaults import resolved_config_with_defaults
from tests.models.deep_supervision import check_deep_supervision
from volseg.models.blocks import Res2NetBlock3d
from volseg.models.res2unet3d import Res2UNet3D

CONFIG = CONF_DIR / "model" / "res2unet3d.yaml"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_shape_on_odd_sized_divisible_input():
    # 12x20x28 is divisible by 4 but every size is odd (3, 5, 7) at the bottom level.
    model = Res2UNet3D(1, 3, features=4, num_levels=3, scale=2, se_reduction=2)
    assert model.divisor == 4
    out = model(torch.randn(2, 1, 12, 20, 28))
    assert out.shape == (2, 3, 12, 20, 28)


def test_non_divisible_size_names_the_divisor():
    model = Res2UNet3D(1, 2, features=4, num_levels=3, scale=2)
    with pytest.raises(ValueError, match=r"divisor=4.*\(12, 20, 30\)"):
        model(torch.randn(1, 1, 12, 20, 30))


def test_forward_rejects_wrong_channels_or_rank():
    model = Res2UNet3D(2, 2, features=4, num_levels=2, scale=2)
    with pytest.raises(ValueError, match=r"expected input \(N, 2, X, Y, Z\)"):
        model(torch.randn(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expected input"):
        model(torch.randn(2, 4, 4, 4))


@pytest.mark.parametrize(
    ("norm", "act"), [("batch", "relu"), ("instance", "leaky_relu"), ("group", "prelu")]
)
def test_backward_reaches_every_parameter(norm, act):
    torch.manual_seed(0)
    model = Res2UNet3D(2, 3, features=4, num_levels=3, scale=2, se_reduction=2, norm=norm, act=act)
    out = model(torch.randn(2, 2, 8, 12, 4))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_train_and_eval_modes():
    torch.manual_seed(0)
    model = Res2UNet3D(1, 2, features=4, num_levels=2, scale=2, dropout=0.5, norm="batch")
    x = torch.randn(2, 1, 4, 6, 8)
    bn = model.encoders[0][0].reduce[1]
    before = bn.running_mean.clone()
    model.train()
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout is active in training
    assert not torch.equal(bn.running_mean, before)  # BN statistics updated
    model.eval()
    stats = bn.running_mean.clone()
    with torch.no_grad():
        c, d = model(x), model(x)
        single = model(x[:1])
    assert torch.equal(c, d)  # deterministic in eval
    assert torch.equal(bn.running_mean, stats)  # eval leaves BN statistics alone
    # Eval BN uses running statistics, so a sample's output does not depend on its batch.
    torch.testing.assert_close(single, c[:1])
    assert torch.isfinite(c).all()


def test_structure_follows_the_unet_layout():
    model = Res2UNet3D(1, 2, features=8, num_levels=4, scale=4)
    widths = [blk[0].fuse[0].out_channels for blk in model.encoders]
    assert widths == [8, 16, 32, 64]
    assert all(isinstance(blk[0], Res2NetBlock3d) for blk in [*model.encoders, *model.decoders])
    assert [up.out_channels for up in model.ups] == [8, 16, 32]
    assert [blk[0].reduce[0].in_channels for blk in model.decoders] == [16, 32, 64]
    assert model.head.in_channels == 8 and model.head.out_channels == 2


def test_default_parameter_count_by_hand():
    # Independent count for in 1, out 2, features 32, 5 levels, scale 4, r 16, batch norm.
    def block(cin: int, c: int) -> int:
        w, h = c // 4, max(1, c // 16)
        n = cin * c + 2 * c + 3 * (27 * w * w + 2 * w) + c * c + 2 * c + 2 * c * h + h + c
        return n + (cin * c + 2 * c if cin != c else 0)

    widths = [32, 64, 128, 256, 512]
    enc = sum(block(cin, c) for cin, c in zip([1, *widths[:-1]], widths))
    ups = sum(8 * widths[i + 1] * widths[i] + widths[i] for i in range(4))
    dec = sum(block(2 * widths[i], widths[i]) for i in range(4))
    head = 32 * 2 + 2
    expected = enc + ups + dec + head
    assert expected == 4_801_310  # the figure stated in the class docstring
    assert _n_params(Res2UNet3D(1, 2)) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": 6, "scale": 4}, r"features must be a positive multiple of scale=4"),
        ({"features": 0}, r"features must be a positive multiple"),
        ({"scale": 1}, r"scale must be >= 2"),
        ({"num_levels": 1}, r"num_levels must be >= 2"),
        ({"se_reduction": -1}, r"se_reduction must be >= 0"),
        ({"norm": "layer"}, r"norm must be one of"),
        ({"act": "tanh"}, r"act must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"in_channels": 0}, r"in_channels must be >= 1"),
        ({"out_channels": 0}, r"out_channels must be >= 1"),
        ({"deep_supervision": "yes"}, r"deep_supervision must be True or False"),
    ],
)
def test_argument_validation(kwargs, match):
    args = {"in_channels": 1, "out_channels": 2, "features": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        Res2UNet3D(**args)


def test_se_reduction_zero_removes_the_gates():
    model = Res2UNet3D(1, 2, features=4, num_levels=2, scale=2, se_reduction=0)
    blocks = [m for m in model.modules() if isinstance(m, Res2NetBlock3d)]
    assert len(blocks) == 3 and all(isinstance(b.se, nn.Identity) for b in blocks)


def test_hydra_config_instantiates_with_constructor_defaults():
    node = resolved_config_with_defaults(CONFIG, Res2UNet3D, 2, 4)
    model = instantiate({**node, "features": 4, "num_levels": 2, "scale": 2})
    assert isinstance(model, Res2UNet3D)
    assert model(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 4, 4, 4, 4)


def test_deep_supervision_one_output_per_decoder_level():
    # Widths 4-8-16-32: outputs at full, 1/2 (8 channels) and 1/4 (16 channels) resolution on
    # a non-cubic input; the two extra heads are 1x1x1 convs to 3 classes with bias.
    check_deep_supervision(
        lambda ds: Res2UNet3D(
            1, 3, features=4, num_levels=4, scale=2, se_reduction=2, deep_supervision=ds
        ),
        torch.randn(1, 1, 8, 8, 16),
        num_outputs=3,
        head_params=(8 * 3 + 3) + (16 * 3 + 3),
    )
