"""Training memory of a network at a patch and batch size, counted without running it.

nnU-Net sizes its patch and batch against a GPU budget with a proxy (the summed feature-map
sizes of the network) scaled to a reference configuration. Here the count is direct: the
network runs forward once on the ``meta`` device (shapes only: no memory, milliseconds), and
every tensor autograd saves for the backward pass is counted once. A backward pass then holds,
beside those, the gradients flowing through the widest level: `TRANSIENT_TENSORS` tensors
the size of the largest saved one. `tests/planning/test_memory.py` checks the sum against the
peak of a real forward and backward pass (anonymous resident memory on CPU,
``max_memory_allocated`` on a GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Gradient tensors alive together during the backward pass, in units of the largest saved
# activation: the gradient arriving at a layer, the one it returns, and the upsampled half of a
# concatenation's. Measured on CPU over isotropic, anisotropic and deep-supervised networks.
TRANSIENT_TENSORS = 2.5
# Adam(W) keeps two moments per parameter, beside the weights and their gradients.
PARAMETER_COPIES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs (float32).

    Attributes:
        activations: tensors saved by the forward pass for the backward pass.
        transient: gradients alive together during the backward pass.
        parameters: the weights (one copy).
        inputs: the input batch.
    """

    activations: int
    transient: int
    parameters: int
    inputs: int

    @property
    def step(self) -> int:
        """What a forward and backward pass adds to memory: activations, gradients flowing
        back, and the weights' gradients."""
        return self.activations + self.transient + self.parameters

    @property
    def training(self) -> int:
        """All of a step under Adam: ``step``, the weights, two moments and the input batch."""
        return self.step + (PARAMETER_COPIES - 1) * self.parameters + self.inputs

    @property
    def training_gb(self) -> float:
        return self.training / 2**30


def estimate_training_memory(
    build: Callable[[], nn.Module],
    in_channels: int,
    patch_size: Sequence[int],
    batch_size: int,
) -> MemoryEstimate:
    """Memory of one training step of the network ``build()`` returns, at this batch.

    Args:
        build: makes the network (called under ``torch.device("meta")``: nothing is allocated).
        in_channels: input channels.
        patch_size: (x, y, z) voxels.
        batch_size: patches per step.
    """
    with torch.device("meta"):
        network = build()
        batch = torch.empty(batch_size, in_channels, *patch_size)
    network.train()
    saved: dict[int, torch.Tensor] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        # keyed by identity: a tensor two operations save (a layer's output, the next one's
        # input) is held once
        saved[id(tensor)] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        network(batch)
    not_activations = {id(batch), *(id(p) for p in network.parameters())}
    activations = [t.numel() * t.element_size() for key, t in saved.items()
                   if key not in not_activations]
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    return MemoryEstimate(
        activations=sum(activations),
        transient=int(TRANSIENT_TENSORS * max(activations, default=0)),
        parameters=parameters,
        inputs=batch.numel() * batch.element_size(),
    )
