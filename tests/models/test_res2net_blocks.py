import pytest
import torch
from torch import nn

from volseg.models.blocks import ConvNormAct, Res2NetBlock3d, SqueezeExcitation3d


def _identity_1x1(conv: nn.Conv3d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 0, 0, 0] = torch.eye(conv.out_channels, conv.in_channels)
        conv.bias.zero_()


def _identity_3x3(conv: nn.Conv3d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1, 1] = torch.eye(conv.out_channels, conv.in_channels)
        conv.bias.zero_()


def _linear_block(channels: int, scale: int, se_reduction: int = 0) -> Res2NetBlock3d:
    """A block whose 1x1x1 convs and K_i are identities and whose norm/act are identities, so
    its output is ``cat(y_1..y_s) + x`` by Eq. 1 of Gao et al."""
    block = Res2NetBlock3d(
        channels, channels, scale=scale, se_reduction=se_reduction, norm="none", act="none"
    )
    _identity_1x1(block.reduce[0])
    _identity_1x1(block.fuse[0])
    for k in block.convs:
        _identity_3x3(k[0])
    return block


def test_se_matches_hand_written_formula():
    torch.manual_seed(0)
    se = SqueezeExcitation3d(8, reduction=4)
    x = torch.randn(2, 8, 3, 4, 5)
    z = x.reshape(2, 8, -1).mean(-1)  # global average pool, (N, C)
    h = torch.clamp(z @ se.fc1.weight.T + se.fc1.bias, min=0)
    s = 1 / (1 + torch.exp(-(h @ se.fc2.weight.T + se.fc2.bias)))
    ref = x * s[:, :, None, None, None]
    torch.testing.assert_close(se(x), ref)  # float32 round-off only


@pytest.mark.parametrize(("channels", "reduction", "hidden"), [(32, 16, 2), (8, 16, 1), (6, 4, 1)])
def test_se_bottleneck_width(channels, reduction, hidden):
    se = SqueezeExcitation3d(channels, reduction)
    assert se.fc1.weight.shape == (hidden, channels)
    assert se.fc2.weight.shape == (channels, hidden)


def test_hierarchy_scale_4_by_hand():
    # Eq. 1: y1 = x1, y2 = K2(x2), y3 = K3(x3 + y2), y4 = K4(x4 + y3); with K_i = identity
    # y = (x1, x2, x3 + x2, x4 + x3 + x2), and the identity shortcut adds x once more.
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 4, 5)
    x1, x2, x3, x4 = x.unbind(1)
    ref = torch.stack([2 * x1, 2 * x2, 2 * x3 + x2, 2 * x4 + x3 + x2], dim=1)
    torch.testing.assert_close(_linear_block(4, scale=4)(x), ref)


def test_hierarchy_scale_2_by_hand():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 2, 3, 4)  # two groups of 3 channels
    torch.testing.assert_close(_linear_block(6, scale=2)(x), 2 * x)


def test_group_dependencies_with_random_kernels():
    # Random K_i and a leaky (strictly monotone) activation: a change in group j reaches output
    # group i exactly when Eq. 1 chains x_j into y_i (x_1 only into y_1; x_2 into y_2..y_4;
    # x_3 into y_3, y_4).
    torch.manual_seed(0)
    block = Res2NetBlock3d(4, 4, scale=4, se_reduction=0, norm="none", act="leaky_relu")
    _identity_1x1(block.reduce[0])
    _identity_1x1(block.fuse[0])
    x = torch.randn(1, 4, 4, 4, 4)
    base = block(x)
    expected = {0: {0}, 1: {1, 2, 3}, 2: {2, 3}, 3: {3}}
    for j, reached in expected.items():
        xp = x.clone()
        xp[:, j] += torch.randn(4, 4, 4)
        changed = {i for i in range(4) if not torch.equal(block(xp)[:, i], base[:, i])}
        assert changed == reached, f"x_{j + 1} reaches groups {changed}"


def test_se_gates_the_residual_branch_before_the_addition():
    # fc2 weight 0 makes the gate the constant sigmoid(b) per channel, so the output is
    # sigmoid(b) * cat(y) + x; SE after the sum would give sigmoid(b) * (cat(y) + x).
    torch.manual_seed(0)
    block = _linear_block(4, scale=2, se_reduction=2)
    b = torch.tensor([-1.0, 0.5, 2.0, 0.0])
    with torch.no_grad():
        block.se.fc2.weight.zero_()
        block.se.fc2.bias.copy_(b)
    x = torch.randn(2, 4, 3, 3, 3)
    gate = torch.sigmoid(b)[None, :, None, None, None]
    torch.testing.assert_close(block(x), gate * x + x)


def test_shortcut_identity_or_projection_and_stride():
    assert isinstance(Res2NetBlock3d(8, 8).shortcut, nn.Identity)
    proj = Res2NetBlock3d(3, 8, stride=2)
    assert isinstance(proj.shortcut, ConvNormAct) and proj.shortcut[0].stride == (2, 2, 2)
    assert isinstance(Res2NetBlock3d(8, 8, stride=2).shortcut, ConvNormAct)
    out = proj(torch.randn(2, 3, 6, 8, 10))
    assert out.shape == (2, 8, 3, 4, 5)
    assert (out >= 0).all()  # ReLU after the addition


def test_parameter_count_by_hand():
    # in 6 -> out 8, scale 4 (width 2), r 4 (hidden 2), batch norm (convs without bias).
    cin, c, w, h = 6, 8, 2, 2
    expected = (
        (cin * c + 2 * c)  # 1x1x1 reduce + BN
        + 3 * (27 * w * w + 2 * w)  # K_2..K_4 + BN
        + (c * c + 2 * c)  # 1x1x1 fuse + BN
        + (c * h + h + h * c + c)  # SE FCs with bias
        + (cin * c + 2 * c)  # projection + BN
    )
    block = Res2NetBlock3d(cin, c, scale=4, se_reduction=4)
    assert sum(p.numel() for p in block.parameters()) == expected


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    block = Res2NetBlock3d(3, 8, scale=4, se_reduction=2, norm="group", act="prelu")
    out = block(torch.randn(2, 3, 4, 4, 4))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out_channels": 6, "scale": 4}, r"out_channels must be divisible by scale=4"),
        ({"scale": 1}, r"scale must be >= 2"),
        ({"stride": 0}, r"stride must be >= 1"),
        ({"se_reduction": -1}, r"se_reduction must be >= 0"),
        ({"in_channels": 0}, r"in_channels must be >= 1"),
        ({"norm": "layer"}, r"norm must be one of"),
        ({"act": "tanh"}, r"act must be one of"),
    ],
)
def test_block_argument_validation(kwargs, match):
    args = {"in_channels": 4, "out_channels": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        Res2NetBlock3d(**args)


def test_se_argument_validation():
    with pytest.raises(ValueError, match="channels must be >= 1"):
        SqueezeExcitation3d(0)
    with pytest.raises(ValueError, match="reduction must be >= 1"):
        SqueezeExcitation3d(8, 0)
