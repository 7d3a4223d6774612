"""Shared check for the model tests: the deep-supervision contract (``blocks.DeepSupervisionHeads``)
that every U-shaped network shares with ``ResidualUNet3D``."""

from collections.abc import Callable

import torch
from torch import nn


def check_deep_supervision(
    build: Callable[[bool], nn.Module], x: torch.Tensor, num_outputs: int, head_params: int
) -> None:
    """``build(deep_supervision)`` makes the network. On input ``x`` asserts: the heads add
    exactly ``head_params`` parameters and nothing else changes; in eval mode one tensor,
    bit-identical to ``deep_supervision=False`` with the same weights; in training mode a list
    of ``num_outputs`` logit maps, the first of the eval output's shape, each later one half
    the previous size along every axis; every head receives a gradient."""
    plain, deep = build(False), build(True)
    missing, unexpected = deep.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("aux_heads.") for k in missing)
    n_params = [sum(p.numel() for p in m.parameters()) for m in (plain, deep)]
    assert n_params[1] - n_params[0] == head_params

    # Eval first: a training-mode forward would move batch-norm running statistics.
    with torch.no_grad():
        want = plain.eval()(x)
        got = deep.eval()(x)
    assert isinstance(got, torch.Tensor) and torch.equal(got, want)

    outs = deep.train()(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [
        (*want.shape[:2], *(s // 2**i for s in want.shape[2:])) for i in range(num_outputs)
    ]
    sum(o.mean() for o in outs).backward()
    heads = deep.aux_heads.heads
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in heads)
