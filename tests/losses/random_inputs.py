"""Seeded random logits and labels shared by the loss tests."""

import torch


def random_logits_labels(
    shape: tuple[int, ...], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``shape`` = (N, C, X, Y, Z) with spread ~2 and uniform labels in ``0..C-1``."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen) * 2
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    return logits, labels
