import pytest
import torch
from torch import nn

from volseg.models.blocks import (
    ACTS,
    NORMS,
    ConvNormAct,
    DeepSupervisionHeads,
    group_count,
    make_act,
    make_norm,
)


@pytest.mark.parametrize(
    ("channels", "groups"), [(1, 1), (3, 3), (8, 8), (12, 6), (64, 8), (10, 5), (7, 7), (11, 1)]
)
def test_group_count_is_largest_divisor_up_to_eight(channels, groups):
    assert group_count(channels) == groups


def test_make_norm_types_and_settings():
    assert isinstance(make_norm("batch", 4), nn.BatchNorm3d)
    inorm = make_norm("instance", 4)
    assert isinstance(inorm, nn.InstanceNorm3d) and inorm.affine
    gnorm = make_norm("group", 12)
    assert isinstance(gnorm, nn.GroupNorm) and gnorm.num_groups == 6
    assert isinstance(make_norm("none", 4), nn.Identity)


def test_group_norm_matches_hand_written_normalisation():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 3, 4, 5)
    out = make_norm("group", 12)(x)  # 6 groups of 2 channels, affine starts at (1, 0)
    g = x.reshape(2, 6, -1)
    var = g.var(-1, unbiased=False, keepdim=True)
    ref = (g - g.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5)
    # float32 rounding only; 1e-5 is far below any normalisation mistake.
    torch.testing.assert_close(out, ref.reshape_as(x), atol=1e-5, rtol=1e-5)


def test_make_act_values():
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    torch.testing.assert_close(make_act("relu")(x.clone()), torch.tensor([0.0, 0.0, 0.0, 1.5]))
    torch.testing.assert_close(
        make_act("leaky_relu")(x.clone()), torch.tensor([-0.02, -0.005, 0.0, 1.5])
    )
    prelu = make_act("prelu")
    assert isinstance(prelu, nn.PReLU) and sum(p.numel() for p in prelu.parameters()) == 1
    # GELU(x) = x * Phi(x), Phi the standard normal CDF.
    phi = 0.5 * (1 + torch.erf(x / 2**0.5))
    torch.testing.assert_close(make_act("gelu")(x), x * phi)
    torch.testing.assert_close(make_act("none")(x), x)


@pytest.mark.parametrize(
    ("padding", "kernel", "expected"),
    [
        ("same", 3, (6, 7, 8)),
        ("valid", 3, (4, 5, 6)),
        ("same", 5, (6, 7, 8)),
        ("valid", 1, (6, 7, 8)),
    ],
)
def test_conv_norm_act_output_size(padding, kernel, expected):
    block = ConvNormAct(2, 3, kernel_size=kernel, padding=padding)
    assert block(torch.randn(2, 2, 6, 7, 8)).shape == (2, 3, *expected)


def test_conv_norm_act_layers_and_bias():
    block = ConvNormAct(2, 4, norm="batch", act="relu", dropout=0.2)
    assert [type(m) for m in block] == [nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.Dropout3d]
    assert block[0].bias is None  # the norm's mean subtraction would cancel a bias
    assert block[3].p == 0.2
    plain = ConvNormAct(2, 4, norm="none")
    assert plain[0].bias is not None
    assert not any(isinstance(m, nn.Dropout3d) for m in plain)


def test_conv_norm_act_stride():
    assert ConvNormAct(1, 2, stride=2)(torch.randn(1, 1, 8, 9, 10)).shape == (1, 2, 4, 5, 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"norm": "layer"}, r"norm must be one of .*'batch'.*got 'layer'"),
        ({"act": "tanh"}, r"act must be one of .*'relu'.*got 'tanh'"),
        ({"padding": "full"}, r"padding must be one of .*'same'.*'valid'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout"),
        ({"kernel_size": 2}, r"odd kernel_size"),
        ({"in_channels": 0}, r"in_channels must be >= 1"),
        ({"out_channels": 0}, r"out_channels must be >= 1"),
        ({"stride": 0}, r"stride must be a positive integer or three of them"),
        ({"kernel_size": (3, 3)}, r"kernel_size must be a positive integer or three"),
        ({"kernel_size": (3, 1, 2)}, r"odd kernel_size"),
    ],
)
def test_conv_norm_act_validation(kwargs, match):
    args = {"in_channels": 1, "out_channels": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        ConvNormAct(**args)


def test_factories_reject_unknown_names():
    with pytest.raises(ValueError, match=r"norm must be one of"):
        make_norm("batchnorm", 4)
    with pytest.raises(ValueError, match=r"act must be one of"):
        make_act("swish")
    assert set(NORMS) == {"batch", "instance", "group", "none"}
    assert {"relu", "leaky_relu", "prelu", "gelu"} <= set(ACTS)


def test_deep_supervision_heads_read_every_decoder_level_below_full_resolution():
    heads = DeepSupervisionHeads([4, 8, 16], out_channels=3)
    assert [h.in_channels for h in heads.heads] == [8, 16]  # level 0 is the network's head
    assert all(h.kernel_size == (1, 1, 1) and h.bias is not None for h in heads.heads)
    logits = torch.randn(1, 3, 8, 8, 8)
    decoded = [torch.randn(1, c, s, s, s) for c, s in ((4, 8), (8, 4), (16, 2))]
    outs = heads(logits, decoded)
    assert outs[0] is logits and [o.shape[2] for o in outs] == [8, 4, 2]
    assert DeepSupervisionHeads([4], 3)(logits, decoded[:1]) == [logits]
    with pytest.raises(ValueError, match="expected the outputs of 3 decoder levels, got 2"):
        heads(logits, decoded[:2])
    with pytest.raises(ValueError, match="decoder_channels"):
        DeepSupervisionHeads([], 3)
