import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import CONF_DIR
from tests.models.config_defaults import resolved_config_with_defaults
from volseg.losses import DeepSupervisionLoss, DiceCELoss
from volseg.models.residual_unet3d import ContextModule, ResidualUNet3D

CONFIG = CONF_DIR / "model" / "residual_unet3d.yaml"


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_params(cin: int, k: int, f: int, levels: int) -> int:
    """Hand count for instance norm (2 affine parameters per channel, bias-free convs)."""
    widths = [f * 2**i for i in range(levels)]
    total = 0
    for c in widths:  # conv (27 cin c) + context (2 norms, 2 convs) + norm after the sum
        total += 27 * cin * c + 2 * (2 * c + 27 * c * c) + 2 * c
        cin = c
    for level in range(levels - 1):
        c = widths[level]
        total += 27 * (2 * c) * c + 2 * c  # upsampling module: 3x3x3 conv 2c -> c, norm
        total += 27 * (2 * c) ** 2 + 2 * (2 * c)  # 3x3x3 conv on the concatenation, norm
        if level > 0:
            total += (2 * c) * c + 2 * c  # localization module's 1x1x1 conv 2c -> c, norm
    seg_inputs = [2 * f] + widths[1 : min(3, levels - 1)]
    total += sum(ci * k + k for ci in seg_inputs)  # 1x1x1 segmentation layers with bias
    return total


def test_output_shape_on_divisible_odd_multiples():
    model = ResidualUNet3D(2, 3, features=4, num_levels=3).eval()
    assert model.divisor == 4
    with torch.no_grad():
        out = model(torch.randn(2, 2, 12, 20, 28))  # 4 * (3, 5, 7)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, 12, 20, 28)
    assert torch.isfinite(out).all()


def test_rejects_non_divisible_size_naming_the_divisor():
    model = ResidualUNet3D(1, 2, features=2, num_levels=3)
    with pytest.raises(ValueError, match=r"divisor=4.*\(16, 32, 30\)"):
        model(torch.randn(1, 1, 16, 32, 30))
    with pytest.raises(ValueError, match=r"expected input \(N, 1, X, Y, Z\)"):
        model(torch.randn(1, 2, 16, 32, 32))


@pytest.mark.parametrize("levels, n_out", [(2, 1), (3, 2), (4, 3), (5, 3)])
def test_deep_supervision_list_in_train_single_tensor_in_eval(levels, n_out):
    model = ResidualUNet3D(1, 3, features=2, num_levels=levels, deep_supervision=True)
    size = (16, 16, 32) if levels == 5 else (8, 16, 16)  # instance norm needs 2+ voxels
    x = torch.randn(1, 1, *size)
    outs = model.train()(x)
    assert isinstance(outs, list)
    # Highest resolution first, each level half the previous one; at most 3 (Fig. 1).
    assert [tuple(o.shape) for o in outs] == [
        (1, 3, *(s // 2**i for s in size)) for i in range(n_out)
    ]
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *size)
    # Without deep supervision even training mode gives a single tensor.
    plain = ResidualUNet3D(1, 3, features=2, num_levels=levels).train()
    assert isinstance(plain(x), torch.Tensor)


def test_outputs_are_running_sums_of_the_segmentation_layers():
    # dropout 0 and instance norm (no running statistics): train and eval compute the same.
    torch.manual_seed(0)
    model = ResidualUNet3D(1, 2, features=2, num_levels=4, dropout=0.0, deep_supervision=True)
    seg = {}
    for level, layer in enumerate(model.seg_layers):
        layer.register_forward_hook(lambda m, i, o, level=level: seg.__setitem__(level, o))
    x = torch.randn(1, 1, 8, 16, 24)
    outs = model.train()(x)

    def up(t):  # the paper's upscale: every voxel repeated twice along each axis
        for dim in (2, 3, 4):
            t = t.repeat_interleave(2, dim=dim)
        return t

    quarter = seg[2]
    half = seg[1] + up(quarter)
    full = seg[0] + up(half)
    for got, want in zip(outs, [full, half, quarter], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), full, rtol=1e-5, atol=1e-6)


def test_deep_supervision_loss_backward_gives_finite_gradients():
    torch.manual_seed(0)
    model = ResidualUNet3D(2, 3, features=2, num_levels=4, deep_supervision=True).train()
    x = torch.randn(2, 2, 16, 16, 24)
    target = torch.randint(0, 3, (2, 16, 16, 24))
    outs = model(x)
    loss = DeepSupervisionLoss(DiceCELoss())(outs, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"
    # Every segmentation layer, coarse ones included, is reached by the loss.
    assert all(layer.weight.grad.abs().sum() > 0 for layer in model.seg_layers)


def test_context_module_is_pre_activation_residual():
    model = ResidualUNet3D(1, 2, features=4, num_levels=3)
    block = model.encoders[1][1]
    assert isinstance(block, ContextModule)
    types = [type(m) for m in block.block]
    # norm -> act -> conv -> dropout -> norm -> act -> conv: the branch starts with a norm.
    assert types == [
        nn.InstanceNorm3d, nn.LeakyReLU, nn.Conv3d, nn.Dropout,
        nn.InstanceNorm3d, nn.LeakyReLU, nn.Conv3d,
    ]
    assert block.block[1].negative_slope == 0.01
    assert block.block[3].p == 0.3
    # The downsampling conv between context modules has stride 2 and a 3x3x3 kernel.
    assert model.encoders[1][0].stride == (2, 2, 2)
    assert model.encoders[1][0].kernel_size == (3, 3, 3)


def test_context_module_branch_ignores_per_channel_affine_input_changes():
    # With a norm first, branch(a x + b) == branch(x) for per-channel a > 0, b; a conv-first
    # (post-activation) block would change. Tolerance covers the norm's eps of 1e-5.
    torch.manual_seed(0)
    block = ContextModule(3, "instance", "leaky_relu", 0.3).eval()
    x = torch.randn(2, 3, 8, 8, 8)
    a = torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1, 1)
    b = torch.tensor([1.0, -4.0, 0.3]).view(1, 3, 1, 1, 1)
    y = a * x + b
    with torch.no_grad():
        torch.testing.assert_close(block(y) - y, block(x) - x, rtol=1e-3, atol=1e-3)
        assert not torch.allclose(block(x), x)  # the branch is not trivially zero


def test_dropout_only_in_context_modules_and_off_in_eval():
    model = ResidualUNet3D(1, 2, features=2, num_levels=3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.3 for d in drops)  # one per context module
    no_dropout = ResidualUNet3D(1, 2, features=2, num_levels=3, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in no_dropout.modules())
    x = torch.randn(1, 1, 8, 8, 8)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("cin, k, f, levels", [(4, 3, 16, 5), (1, 2, 2, 2), (3, 6, 4, 4)])
def test_parameter_count_matches_hand_count(cin, k, f, levels):
    assert _n_params(ResidualUNet3D(cin, k, features=f, num_levels=levels)) == _expected_params(
        cin, k, f, levels
    )


def test_default_parameter_count_is_the_documented_one():
    assert _n_params(ResidualUNet3D(4, 3)) == 9_464_137
    assert "9,464,137" in ResidualUNet3D.__doc__


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"features": 0}, "features"),
        ({"num_levels": 1}, "num_levels"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"act": "tanh"}, "act must be one of"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"deep_supervision": 1}, "deep_supervision"),
    ],
)
def test_argument_validation(kwargs, match):
    args = {"in_channels": 1, "out_channels": 2, "features": 2, "num_levels": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        ResidualUNet3D(**args)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_other_norms_build_and_run(norm):
    model = ResidualUNet3D(1, 2, features=4, num_levels=3, norm=norm, act="relu").train()
    out = model(torch.randn(2, 1, 8, 8, 12))
    assert out.shape == (2, 2, 8, 8, 12) and torch.isfinite(out).all()


def test_hydra_config_instantiates_with_constructor_defaults():
    node = resolved_config_with_defaults(CONFIG, ResidualUNet3D, 2, 4)
    model = instantiate({**node, "features": 2, "num_levels": 2})
    assert isinstance(model, ResidualUNet3D)
    assert model.eval()(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 4, 4, 4, 4)
