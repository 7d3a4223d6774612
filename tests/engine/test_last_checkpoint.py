"""One last.ckpt per run, written by LastCheckpoint alone and always holding the newest step."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import volseg
from volseg.engine.last_checkpoint import LastCheckpoint

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


class TinyModule(pl.LightningModule):
    """One linear layer on random numbers: Lightning's loops without volseg's data."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).square().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(STEPS_PER_EPOCH, 2)), batch_size=1)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(2, 2)), batch_size=1)


class RecordSaves(pl.Callback):
    """Each checkpoint saved, as (global step, validation rounds run before it)."""

    def __init__(self) -> None:
        self.saves: list[tuple[int, int]] = []
        self.rounds = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self.rounds += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saves.append((trainer.global_step, self.rounds))


def test_an_epochs_last_batch_is_saved_only_after_its_validation(tmp_path):
    # Lightning counts an epoch whose last batch is in the checkpoint as done: resumed from a
    # save made before the validation round (a run killed during it), it never validates it.
    record = RecordSaves()
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[LastCheckpoint(tmp_path, every_n_train_steps=2), record],
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(TinyModule())
    assert record.saves == [(2, 0), (4, 1), (6, 1), (8, 2)]
