"""What volseg adds to TensorBoard besides scalars: validation overlays and the hparams tab.

Both callbacks write through the run's `TensorBoardLogger` and do nothing when the run has
none (``logger=csv``, ``logger=none``). Under DDP only rank 0 writes (Lightning's logger
experiment is a no-op elsewhere), so the overlays show rank 0's share of the validation cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn

from volseg.io.overlay import overlay_picture
from volseg.runs import metric_value


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The trainer's first TensorBoard logger, or None."""
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class ValidationImageLogger(pl.Callback):
    """Every ``every_n_epochs`` epochs, one overlay image per validation case in TensorBoard.

    The image is `volseg.io.overlay.overlay_picture` (the picture ``volseg evaluate``
    writes): rows are the x, y and z planes through the largest reference structure, columns
    image | reference | prediction, labels blended in one colour per class. It is drawn from
    the prediction `SegmentationModule.validation_step` returns, so no second inference pass
    runs; it is on the preprocessed grid (target spacing), where validation scores.

    Tags are ``val/overlay/<case id>``, at the trainer's global step: TensorBoard's slider
    steps through the epochs.

    Args:
        every_n_epochs: log at the validations of epochs ``n, 2n, ...`` (1-based), and at the
            last epoch.
        max_cases: at most this many validation cases per round (the first ones, in loader
            order, so the same cases each time).
    """

    def __init__(self, every_n_epochs: int = 5, max_cases: int = 4) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if max_cases < 0:
            raise ValueError(f"max_cases must be >= 0, got {max_cases}")
        self.every_n_epochs = every_n_epochs
        self.max_cases = max_cases

    def _due(self, trainer: pl.Trainer) -> bool:
        # Only while fitting (the validate/test calls after fit repeat the last step), and on
        # rank 0, whose logger is the one that writes.
        if (trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING
                or not trainer.is_global_zero):
            return False
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
        batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        logger = tensorboard_logger(trainer)
        if (logger is None or batch_idx >= self.max_cases or not self._due(trainer)
                or not isinstance(outputs, Mapping) or "prediction" not in outputs):
            return
        shape = batch["label"].shape[-3:]
        picture = overlay_picture(
            batch["image"][0, 0].float().cpu().numpy(),
            batch["label"].reshape(shape).cpu().numpy(),
            outputs["prediction"].reshape(shape).cpu().numpy(),
            batch["meta"]["preprocessed"]["spacing"],
        )
        logger.experiment.add_image(f"val/overlay/{batch['case_id']}", picture,
                                    global_step=trainer.global_step, dataformats="HWC")


def scalar_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``params`` flattened to ``a/b`` keys with TensorBoard-storable values.

    Numbers, booleans and strings stay; None and lists become their text (the hparams tab
    filters and sorts by these values, so a list is one comparable value).
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(scalar_hparams(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class HyperparameterLogger(pl.Callback):
    """The hparams tab: the module's hyperparameters with the run's final metrics, once.

    Final means the last stage the run has: `volseg.engine.train.train` fits, validates the
    best checkpoint again unless the last round of the fit already scored it, then tests it,
    so with ``wait_for_test`` the record is written when the test ends, holding the last
    validation's (the best checkpoint's) and the test's metrics; without it, when fit ends.
    TensorBoard keeps the first hparams record of a run, hence one write.

    The metrics are stored under ``hparams/<name>`` (``hparams/val/dice``), so the
    ``val/dice`` curve gets no extra point.

    Args:
        wait_for_test: write after testing (the run tests); false: after fit.
        metric_prefixes: which logged metrics go into the record.
    """

    def __init__(self, wait_for_test: bool = True,
                 metric_prefixes: tuple[str, ...] = ("val/", "test/")) -> None:
        self.wait_for_test = wait_for_test
        self.metric_prefixes = tuple(metric_prefixes)
        self._metrics: dict[str, float] = {}
        self._written = False

    def _collect(self, trainer: pl.Trainer) -> None:
        for name, value in trainer.callback_metrics.items():
            value = metric_value(value)
            if name.startswith(self.metric_prefixes) and value is not None:
                self._metrics[f"hparams/{name}"] = value

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or self._written or not self._metrics:
            return
        self._written = True
        logger.log_hyperparams(scalar_hparams(pl_module.hparams), dict(self._metrics),
                               step=trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._collect(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.wait_for_test:
            self._write(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collect(trainer)
        self._write(trainer, pl_module)


__all__ = ["HyperparameterLogger", "ValidationImageLogger", "scalar_hparams",
           "tensorboard_logger"]
