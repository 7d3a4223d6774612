"""Training history: the logged losses and Dice per epoch, as numbers and as a picture.

`TrainingHistory` collects what the module logged (``train/loss_epoch``, ``val/loss``,
``val/dice``, ``val/dice_<class>``, ...) from ``trainer.callback_metrics`` once per epoch, and
at the end of fit writes into ``dirpath``:

- ``history.json``: one row per epoch, ``{"epoch": 0, "lr": ..., "train/loss_epoch": ...,
  "val/loss": ..., "val/dice": ..., ...}`` (a metric the epoch did not log is absent);
- ``history.csv``: the same rows as a table (empty cell: not logged);
- ``training_history.png``: loss (train and validation) and Dice (mean and per class) curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from volseg.io.atomic import atomic_path, write_csv, write_json
from volseg.runs import HISTORY_CSV, HISTORY_JSON, HISTORY_PNG, metric_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class TrainingHistory(pl.Callback):
    """Collect the per-epoch metrics while fitting; write them and their curves at the end.

    The training metrics of an epoch are read when it ends, before the checkpoint callbacks
    write ``last.ckpt``, and again when the next epoch starts or training ends (for what the
    module logs in its own epoch-end hook); validation metrics when the validation round ends.
    The rows are part of the callback's checkpoint state, so a resumed run's history starts at
    epoch 0, not at the resume, with one complete row per epoch: the resumed process has none
    of the stopped one's logged metrics, so the checkpoint's rows must already hold them.

    Args:
        dirpath: folder for ``history.json``, ``history.csv`` and ``training_history.png``.
        prefixes: which logged metrics to keep.
    """

    def __init__(self, dirpath: str | Path, prefixes: Sequence[str] = ("train/", "val/")) -> None:
        self.dirpath = Path(dirpath)
        self.prefixes = tuple(prefixes)
        self.rows: dict[int, dict[str, float | None]] = {}

    def _record(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        row = self.rows.setdefault(epoch, {})
        for name, value in metrics.items():
            # Per-step values (train/loss_step) say nothing about the epoch, and a metric
            # logged per step and per epoch also appears bare (train/loss): the same number.
            if (name.startswith(self.prefixes) and not name.endswith("_step")
                    and f"{name}_epoch" not in metrics):
                row[name] = metric_value(value)

    def _record_lr(self, trainer: pl.Trainer) -> None:
        if trainer.optimizers:
            row = self.rows.setdefault(trainer.current_epoch, {})
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning does not call on_train_epoch_start for an epoch it restarts mid-way (the
        # restored row has its learning rate) nor for the epoch after a checkpoint written at
        # an epoch's last batch (an older last.ckpt, see LastCheckpoint): that row needs one.
        if "lr" not in self.rows.get(trainer.current_epoch, {}):
            self._record_lr(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch > 0:
            self._record(epoch - 1, {k: v for k, v in trainer.callback_metrics.items()
                                     if k.startswith("train/")})
        self._record_lr(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # callback_metrics already holds the epoch's means here (Lightning computes them when
        # read), and last.ckpt is written after this hook: a run resumed from it keeps them.
        self._record(trainer.current_epoch, {k: v for k, v in trainer.callback_metrics.items()
                                             if k.startswith("train/")})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._record(trainer.current_epoch, {k: v for k, v in trainer.callback_metrics.items()
                                             if not k.startswith("train/")})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # current_epoch already counts the finished last epoch.
        last = max(trainer.current_epoch - 1, 0)
        self._record(last, {k: v for k, v in trainer.callback_metrics.items()
                            if k.startswith("train/")})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write()

    @rank_zero_only
    def write(self) -> dict[str, Path]:
        """Write the history files; returns them by name."""
        rows = self.history()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        written = {HISTORY_JSON: write_json(rows, self.dirpath / HISTORY_JSON)}
        written[HISTORY_CSV] = write_csv(rows, self.dirpath / HISTORY_CSV)
        written[HISTORY_PNG] = plot_history(rows, self.dirpath / HISTORY_PNG)
        return written

    def history(self) -> list[dict[str, float | int | None]]:
        """The rows collected so far, in epoch order."""
        return [{"epoch": epoch, **row} for epoch, row in sorted(self.rows.items())]

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {int(k): dict(v) for k, v in self.rows.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = {int(k): dict(v) for k, v in state_dict.get("rows", {}).items()}


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_history(rows: Sequence[Mapping[str, Any]], path: str | Path,
                 title: str | None = None) -> Path:
    """`history_figure` written as a PNG (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        history_figure(rows, title).savefig(tmp, dpi=100)
    return path


def history_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Two panels, loss and Dice against epoch.

    Loss: ``train/loss_epoch`` and ``val/loss``. Dice: ``val/dice`` (the mean over foreground
    classes, thick), the smoothed and post-processed means when logged (dashed, dotted), and
    every ``val/dice_<class>``. Epochs are 1-based on the axis, as the progress bar counts them.
    """
    # The object API with an Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # Fixed margins, not a layout engine: "constrained" costs a quarter of a second per run,
    # and these two panels always have the same furniture.
    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    loss_axes, dice_axes = figure.subplots(1, 2)
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        epochs, values = _series(rows, key)
        if values:
            loss_axes.plot([e + 1 for e in epochs], values, marker="o", label=label)
    # Means over the classes: the plain one thick, the smoothed and post-processed ones (not
    # classes, though their keys look like it) thin black lines, dashed and dotted.
    means = {"val/dice": ("mean", "-"), "val/dice_ema": ("mean, smoothed", "--"),
             "val/dice_postprocessed": ("mean, post-processed", ":")}
    dice_keys = [k for k in dict.fromkeys(k for row in rows for k in row)
                 if k.startswith("val/dice_") and "_region_" not in k and k not in means]
    for key in [*means, *dice_keys]:
        epochs, values = _series(rows, key)
        if not values:
            continue
        x = [e + 1 for e in epochs]
        if key in means:
            label, style = means[key]
            plain = key == "val/dice"
            dice_axes.plot(x, values, style, marker="o" if plain else None, color="black",
                           linewidth=2.5 if plain else 1.2, label=label)
        else:
            dice_axes.plot(x, values, marker="o", linewidth=1.2,
                           label=key.removeprefix("val/dice_"))
    loss_axes.set(title="loss", xlabel="epoch", ylabel="loss")
    dice_axes.set(title="validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1))
    for axes in (loss_axes, dice_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    figure.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.86 if title else 0.91,
                           wspace=0.22)
    return figure


__all__ = ["TrainingHistory", "history_figure", "plot_history"]
