"""Mixed precision: bf16 on CPU, fp16 on CUDA (Lightning runs bf16 when asked for fp16 on CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

import volseg

# bf16 convolutions are ~10x slower than float32 on CPUs without bf16 instructions (this
# one): one training step, one validation case.
TINY = ["trainer.max_epochs=1", "data.samples_per_epoch=2", "test=false",
        "module.surface_metrics=false", "trainer.num_sanity_val_steps=0",
        "+trainer.limit_val_batches=1"]


def _finite_run(cfg) -> dict:
    """Train ``cfg``; check metrics.json and that the checkpoint kept float32 weights."""
    metrics = volseg.train(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text()) == metrics
    assert math.isfinite(metrics["val/loss"])
    state = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=False)
    # Autocast computes in half precision; the weights and optimizer stay float32.
    assert {t.dtype for t in state["state_dict"].values() if t.is_floating_point()} == {
        torch.float32}
    return metrics


@pytest.mark.slow
def test_bf16_mixed_trains_on_cpu(train_config):
    cfg = train_config(*TINY, "trainer.precision=bf16-mixed")
    assert instantiate(cfg.trainer, logger=False).precision == "bf16-mixed"
    _finite_run(cfg)


def test_16_mixed_on_cpu_becomes_bf16_mixed_with_a_warning(train_config):
    cfg = train_config("trainer.precision=16-mixed")
    with pytest.warns(UserWarning, match="fp16 is not supported on CPU"):
        trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.precision == "bf16-mixed"


@pytest.mark.gpu
@pytest.mark.slow
def test_16_mixed_trains_on_a_gpu(train_config):
    cfg = train_config(*TINY, "trainer=gpu", "trainer.accelerator=gpu",
                       "trainer.precision=16-mixed")
    _finite_run(cfg)
