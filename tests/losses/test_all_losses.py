"""What every loss and every conf/loss option must do: ignore, converge, survive autocast."""

import inspect
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

import volseg.losses
from tests.conftest import CONF_DIR
from tests.losses.random_inputs import random_logits_labels
from volseg.losses import (
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    DiceLoss,
    FocalTverskyLoss,
    SparseWeightedCrossEntropyLoss,
    TverskyLoss,
    WeightedSum,
)

CONF = CONF_DIR / "loss"
SHAPE = (2, 3, 4, 5, 6)
IGNORE = 255

# Every loss, called as LOSSES[name](ignore_index=...); some twice, with other options.
LOSSES = {
    "dice": DiceLoss,
    "dice_background_batch": partial(DiceLoss, include_background=True, batch_dice=True),
    "tversky": TverskyLoss,
    "focal_tversky": partial(FocalTverskyLoss, include_background=True),
    "focal_tversky_batch": partial(FocalTverskyLoss, batch_dice=True, gamma=3.0),
    "ce": CrossEntropyLoss,
    "ce_weighted": partial(CrossEntropyLoss, weight=[0.5, 1.0, 2.0]),
    "sparse_ce": partial(SparseWeightedCrossEntropyLoss, class_weights="balanced"),
    "dice_ce": DiceCELoss,
}
# Losses built from other losses; tests/losses/test_compound.py covers them.
WRAPPERS = {WeightedSum, DeepSupervisionLoss}

# One class per conf/loss option, and the values a config sets on purpose away from the
# constructor default (sparse annotation is the point of sparse_ce).
CONFIGS = {
    "ce": CrossEntropyLoss,
    "deep_supervision": DeepSupervisionLoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
    "focal_tversky": FocalTverskyLoss,
    "sparse_ce": SparseWeightedCrossEntropyLoss,
    "tversky": TverskyLoss,
    "weighted_sum": WeightedSum,
}
CONFIG_CHOICES = {"sparse_ce": {"class_weights": "balanced"}}


def _sparse_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, labels with ~40% of voxels set to IGNORE, the ignored mask and the true labels."""
    logits, labels = random_logits_labels(SHAPE, seed)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed + 100)) < 0.4
    return logits, labels.masked_fill(ignored, IGNORE), ignored, labels


def test_every_loss_is_listed() -> None:
    exported = {getattr(volseg.losses, name) for name in volseg.losses.__all__}
    listed = {type(make(ignore_index=IGNORE)) for make in LOSSES.values()}
    assert listed == exported - WRAPPERS


@pytest.mark.parametrize("name", list(LOSSES))
def test_ignored_voxels_get_exactly_zero_gradient(name: str) -> None:
    logits, labels, ignored, _ = _sparse_inputs(0)
    logits.requires_grad_(True)
    LOSSES[name](ignore_index=IGNORE)(logits, labels).backward()
    grad = logits.grad.movedim(1, -1)
    assert torch.all(grad[ignored] == 0)
    assert grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", list(LOSSES))
def test_perfect_prediction_is_near_zero(name: str) -> None:
    # Random logits stay on the ignored voxels: they must not count. Every class occurs in every
    # sample's labelled voxels here, so no overlap term is 0/0-smoothed to a poor score.
    logits, labels, ignored, truth = _sparse_inputs(1)
    perfect = F.one_hot(truth, SHAPE[1]).movedim(-1, 1).float() * 20.0
    logits = torch.where(ignored.unsqueeze(1), logits, perfect)
    assert LOSSES[name](ignore_index=IGNORE)(logits, labels).item() < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_finite_under_cpu_autocast(name: str, dtype: torch.dtype) -> None:
    logits, labels, _, _ = _sparse_inputs(2)
    conv = torch.nn.Conv3d(SHAPE[1], SHAPE[1], 1)
    with torch.autocast("cpu", dtype=dtype):
        # Large activations, as early in training: the loss must not overflow in half precision.
        loss = LOSSES[name](ignore_index=IGNORE)(conv(logits * 100), labels)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_every_config_is_listed() -> None:
    assert {path.stem for path in CONF.glob("*.yaml")} == set(CONFIGS)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_lists_every_argument_with_its_default(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    params = inspect.signature(CONFIGS[name]).parameters
    assert set(cfg) - {"_target_"} == set(params)
    choices = CONFIG_CHOICES.get(name, {})
    for key, value in choices.items():
        assert value != params[key].default, f"{key} is no longer a deliberate difference"
    for key, param in params.items():
        if param.default is inspect.Parameter.empty:
            continue  # a required argument, e.g. deep supervision's nested loss config
        assert cfg[key] == choices.get(key, param.default), key


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_instantiates_and_runs(name: str) -> None:
    loss = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(loss, CONFIGS[name])
    logits, labels, _, truth = _sparse_inputs(3)
    target = labels if getattr(loss, "ignore_index", None) == IGNORE else truth
    assert torch.isfinite(loss(logits, target))
