"""One last.ckpt per run, written by LastCheckpoint alone and always holding the newest step."""

from pathlib import Path

import pytest
import torch

import volseg

STEPS_PER_EPOCH = 4  # FAST: data.samples_per_epoch=8, data.batch_size=2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every_n_steps", "max_steps", "final_step"),
    [
        # Step saves at 3 and 6 only: the final step 8 is in last.ckpt through the epoch-end save.
        (3, -1, 2 * STEPS_PER_EPOCH),
        # Stopped mid-epoch by max_steps, no step saves at all: still the final step.
        (0, STEPS_PER_EPOCH + 2, STEPS_PER_EPOCH + 2),
    ],
)
def test_one_last_checkpoint_holding_the_final_step(train_config, every_n_steps, max_steps,
                                                    final_step):
    cfg = train_config("test=false", "module.surface_metrics=false",
                       f"callbacks.last_checkpoint.every_n_train_steps={every_n_steps}",
                       f"+trainer.max_steps={max_steps}")
    metrics = volseg.train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert [p.name for p in checkpoints.glob("last*.ckpt")] == ["last.ckpt"]
    saved = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == final_step
    # Saved after the best-checkpoint callback's epoch-end update: its record is current.
    (best,) = [v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert best["best_model_path"] == metrics["best_model_path"]
    assert Path(metrics["best_model_path"]).is_file()
