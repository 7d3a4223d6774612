import pytest
import torch
from monai.networks.nets import resnet as monai_resnet
from torch import nn

from volseg.models.blocks import BasicBlock3d, Bottleneck3d
from volseg.models.resnet_encoder import ResNetEncoder3d, check_input

# He et al. 2016, Table 1: (block, blocks per stage).
TABLE_1 = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet_body_count(depth: int, in_channels: int, width: int, dims: int) -> int:
    """Hand count of a ResNet body (no classifier) with batch norm and option-B shortcuts.

    A k-wide conv in ``dims`` dimensions has cin * cout * k**dims weights (no bias, BN follows);
    each BN has a scale and a shift per channel.
    """
    kind, counts = TABLE_1[depth]
    expansion = 1 if kind == "basic" else 4

    def conv_bn(cin: int, cout: int, k: int) -> int:
        return cin * cout * k**dims + 2 * cout

    total = conv_bn(in_channels, width, 7)
    cin = width
    for stage, count in enumerate(counts):
        c = width * 2**stage
        for block in range(count):
            if kind == "basic":
                total += conv_bn(cin, c, 3) + conv_bn(c, c, 3)
            else:
                total += conv_bn(cin, c, 1) + conv_bn(c, c, 3) + conv_bn(c, 4 * c, 1)
            stride = 2 if stage > 0 and block == 0 else 1
            if stride != 1 or cin != c * expansion:
                total += conv_bn(cin, c * expansion, 1)
            cin = c * expansion
    return total


@pytest.mark.parametrize(
    ("depth", "torchvision_2d"),
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)],
)
def test_hand_formula_reproduces_known_2d_resnet_counts(depth, torchvision_2d):
    # torchvision's ImageNet ResNets (3 input channels), minus the 1000-class classifier.
    final = 512 * (1 if depth < 50 else 4)
    classifier = final * 1000 + 1000
    assert _resnet_body_count(depth, 3, 64, dims=2) == torchvision_2d - classifier


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_encoder_count_matches_3d_hand_formula(depth):
    with torch.device("meta"):  # counts without allocating tens of millions of floats
        encoder = ResNetEncoder3d(2, depth=depth, width=64)
    assert _n_params(encoder) == _resnet_body_count(depth, 2, 64, dims=3)


def test_known_3d_counts():
    # 3D: every 3x3 kernel becomes 3x3x3 and the 7x7 stem 7x7x7.
    with torch.device("meta"):
        assert _n_params(ResNetEncoder3d(1, depth=18)) == 33_160_000
        assert _n_params(ResNetEncoder3d(2, depth=50)) == 46_177_024


@pytest.mark.parametrize("depth", [10, 18, 34, 50, 101])
def test_encoder_count_matches_monai_resnet(depth):
    # MONAI's 3D ResNet (Hara et al. layout) with option-B shortcuts and no classifier.
    kind = "basic" if depth < 50 else "bottleneck"
    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}
    layers[101] = [3, 4, 23, 3]
    reference = monai_resnet.ResNet(
        kind,
        layers[depth],
        [4, 8, 16, 32],
        n_input_channels=3,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        feed_forward=False,
        bias_downsample=False,
    )
    assert _n_params(ResNetEncoder3d(3, depth=depth, width=4)) == _n_params(reference)


@pytest.mark.parametrize(
    ("kwargs", "reductions"),
    [
        ({}, (2, 4, 8, 16, 32)),
        ({"stem_pool": False}, (2, 2, 4, 8, 16)),
        ({"stem_stride": 1}, (1, 2, 4, 8, 16)),
        ({"stem_stride": 1, "stem_pool": False}, (1, 1, 2, 4, 8)),
    ],
)
def test_feature_shapes_and_reductions(kwargs, reductions):
    encoder = ResNetEncoder3d(1, depth=18, width=4, **kwargs)
    assert encoder.reductions == reductions
    assert encoder.divisor == reductions[-1]
    size = tuple(k * encoder.divisor for k in (1, 2, 3))
    features = encoder(torch.randn(1, 1, *size))
    assert len(features) == 5
    for feature, channels, r in zip(features, (4, 4, 8, 16, 32), reductions):
        assert feature.shape == (1, channels, *(s // r for s in size))


def test_bottleneck_encoder_channels():
    encoder = ResNetEncoder3d(2, depth=50, width=4, stem_pool=False)
    assert encoder.channels == (4, 16, 32, 64, 128)
    features = encoder(torch.randn(2, 2, 32, 32, 32))
    assert features[-1].shape == (2, 128, 2, 2, 2)  # no max pool: 1/16
    assert [f.shape[1] for f in features] == [4, 16, 32, 64, 128]


def test_basic_block_is_residual():
    torch.manual_seed(0)
    block = BasicBlock3d(4, 4)
    assert isinstance(block.shortcut, nn.Identity)
    # With the residual branch's last BN scale and shift at zero the block is relu(x).
    nn.init.zeros_(block.conv2[1].weight)
    nn.init.zeros_(block.conv2[1].bias)
    x = torch.randn(2, 4, 6, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_bottleneck_is_residual():
    torch.manual_seed(0)
    block = Bottleneck3d(16, 4)
    assert isinstance(block.shortcut, nn.Identity)
    nn.init.zeros_(block.conv3[1].weight)
    nn.init.zeros_(block.conv3[1].bias)
    x = torch.randn(2, 16, 6, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize(("block", "out"), [(BasicBlock3d, 8), (Bottleneck3d, 32)])
def test_strided_block_projects_shortcut(block, out):
    b = block(4, 8, stride=2, norm="group", act="leaky_relu")
    assert not isinstance(b.shortcut, nn.Identity)
    y = b(torch.randn(1, 4, 8, 10, 12))
    assert y.shape == (1, out, 4, 5, 6)
    assert torch.isfinite(y).all()


def test_block_counts_by_hand():
    # BasicBlock 8 -> 8: two 3x3x3 convs + two BNs; Bottleneck 8 -> 4 -> 16 with projection.
    assert _n_params(BasicBlock3d(8, 8)) == 2 * (27 * 8 * 8 + 2 * 8)
    bottleneck = (8 * 4 + 8) + (27 * 4 * 4 + 8) + (4 * 16 + 32) + (8 * 16 + 32)
    assert _n_params(Bottleneck3d(8, 4)) == bottleneck
    # Without a norm every conv keeps its bias instead of the BN's 2 * out parameters.
    assert _n_params(BasicBlock3d(8, 8, norm="none")) == 2 * (27 * 8 * 8 + 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 20}, "depth must be one of"),
        ({"width": 0}, "width"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"act": "tanh"}, "act must be one of"),
        ({"stem_kernel": 4}, "stem_kernel"),
        ({"stem_stride": 3}, "stem_stride must be one of"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_encoder_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetEncoder3d(**{"in_channels": 1, **kwargs})


def test_block_argument_validation():
    with pytest.raises(ValueError, match="channels"):
        BasicBlock3d(4, 0)
    with pytest.raises(ValueError, match="norm must be one of"):
        Bottleneck3d(4, 4, norm="batchnorm")


def test_check_input_messages():
    check_input(torch.zeros(1, 2, 16, 32, 48), 2, 16)
    with pytest.raises(ValueError, match="divisor=16"):
        check_input(torch.zeros(1, 2, 16, 32, 40), 2, 16)
    with pytest.raises(ValueError, match=r"\(N, 2, X, Y, Z\)"):
        check_input(torch.zeros(1, 3, 16, 16, 16), 2, 16)
    with pytest.raises(ValueError, match=r"\(N, 2, X, Y, Z\)"):
        check_input(torch.zeros(2, 16, 16, 16), 2, 16)
