"""SegmentationModule: any network and any loss, trained on patches, evaluated on volumes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from volseg.data.preprocess import Preprocessor
from volseg.engine.trusted import check_targets, instantiate_trusted
from volseg.inference.inferer import SlidingWindowInferer
from volseg.inference.labels import class_labels
from volseg.inference.network import TrainedNetwork
from volseg.inference.norm_checks import batch_norm_warning, tile_warning
from volseg.inference.postprocess import describe_postprocessing
from volseg.metrics import (
    AverageSurfaceDistanceMetric,
    DiceMetric,
    HausdorffDistanceMetric,
    IoUMetric,
    PerClassMean,
    SurfaceDiceMetric,
    SurfaceMean,
    VolumeSimilarityMetric,
    update_surface_metrics,
)

log = logging.getLogger(__name__)

NONFINITE_LOSS = ("raise", "skip")
# `module.metrics` names; each is also its log name (`val/<name>`, `val/<name>_<class>`).
OVERLAP_METRICS = ("dice", "iou", "volume_similarity")
# Scored on surfaces in mm: off under `surface_metrics: false` and for partly annotated cases.
SURFACE_METRICS = ("hausdorff", "hd95", "assd", "nsd")
METRICS = OVERLAP_METRICS + SURFACE_METRICS
NO_POSTPROCESSING = {"largest_foreground": False, "largest_component": [], "connectivity": 26}


def center_crop(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The central ``shape`` of ``volume``'s last three axes."""
    starts = [(n - s) // 2 for n, s in zip(volume.shape[-3:], shape)]
    return volume[..., starts[0]:starts[0] + shape[0], starts[1]:starts[1] + shape[1],
                  starts[2]:starts[2] + shape[2]]


def _check_regions(
    regions: Mapping[str, Sequence[int]], num_classes: int
) -> dict[str, list[int]]:
    """``module.regions`` as plain lists, after checking names and label values."""
    checked = {}
    for name, values in regions.items():
        labels = [int(v) for v in values]
        if not str(name).isidentifier() or not labels:
            raise ValueError(f"module.regions.{name}: needs a plain name and at least one label")
        if min(labels) < 1 or max(labels) >= num_classes:
            raise ValueError(
                f"module.regions.{name}: labels {labels} must be foreground classes "
                f"1..{num_classes - 1}"
            )
        checked[str(name)] = labels
    return checked


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    """``module.metrics`` as a list, after checking every name is known and given once."""
    allowed = ", ".join(METRICS)
    # A bare string would be read letter by letter.
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"module.metrics must be a non-empty list of {allowed}; "
                         f"got {metrics!r}")
    names = [str(m) for m in metrics]
    unknown = [m for m in names if m not in METRICS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"module.metrics={names}: each must be one of {allowed}, given once"
                         + (f"; unknown: {unknown}" if unknown else ""))
    return names


def _check_loss_ignores(loss: nn.Module, ignore_index: int | None) -> None:
    """Refuse a loss that would train on unannotated voxels as if they were labelled."""
    if ignore_index is None:
        return
    for part in loss.modules():
        if hasattr(part, "ignore_index") and part.ignore_index != ignore_index:
            raise ValueError(
                f"data.ignore_index={ignore_index} but {type(part).__name__} has "
                f"ignore_index={part.ignore_index}: set loss.ignore_index={ignore_index} "
                "(loss.loss.ignore_index under deep_supervision)"
            )


class SegmentationModule(pl.LightningModule):
    """Wraps a network and a loss given as configs, so a checkpoint alone can rebuild both.

    Every argument is plain data (dicts with ``_target_``), saved as hyperparameters:
    ``SegmentationModule.load_from_checkpoint(path)`` rebuilds the network and knows the
    preprocessing, the class names and the inference settings, as nnU-Net's plans do.

    Args:
        net: network config (``_target_`` + constructor arguments).
        loss: loss config.
        optimizer: optimizer config with ``_partial_: true`` (the module gives it parameters).
        scheduler: LR scheduler config with ``_partial_: true``, or ``None``/empty for none.
        class_names: one name per class, background first; metrics are named after them.
        preprocessing: `Preprocessor` settings the network was trained with.
        inference: sliding-window settings (`SlidingWindowInferer`): ``tile_size``
            (x, y, z), ``overlap``, ``batch_size``, ``mode`` (``gaussian`` or ``constant``).
        scheduler_monitor: metric a ReduceLROnPlateau-style scheduler watches.
        scheduler_frequency: epochs between scheduler steps (match validation frequency).
        channels_last: keep weights and inputs in the channels-last 3D memory layout, which
            oneDNN (CPU) and cuDNN convolutions run faster on.
        metrics: what validation and test score, per foreground class and per region, each
            logged under its own name: ``dice``, ``iou``, ``volume_similarity``
            (``1 - ||P|-|T|| / (|P|+|T|)``), and in mm at the case's voxel spacing
            ``hausdorff`` (maximum distance), ``hd95``, ``assd`` (average symmetric surface
            distance) and ``nsd`` (normalised surface Dice). Checkpointing and early stopping
            watch ``val/dice`` by default: keep ``dice`` unless they watch another.
        surface_metrics: ``False`` drops the four distance metrics from ``metrics`` (sparse
            labels have no known surface); ``True`` scores ``metrics`` as listed.
        surface_tolerance_mm: surface Dice tolerance, one value or one per foreground class.
        regions: extra evaluation regions, name -> label values scored as one structure
            (the KiTS23 regions: ``{kidney_and_masses: [1, 2, 3], masses: [2, 3]}``); logged as
            ``<stage>/<metric>_region_<name>``.
        ignore_index: label of unannotated voxels (sparse annotation), or ``None``. The loss
            must ignore the same value; metrics score annotated voxels only, and skip the
            surface metrics of a case that has unannotated voxels (its surfaces are unknown).
        nonfinite_loss: what a NaN or infinite training loss does: ``"raise"`` stops training
            with a `FloatingPointError` naming the step and batch; ``"skip"`` logs a warning,
            skips that batch's optimizer step and counts it in ``skipped_batches``
            (logged as ``train/skipped_batches``).
        warmup_steps: optimizer steps over which the learning rate rises linearly from
            ``lr / warmup_steps`` to the optimizer's ``lr`` (Goyal et al. 2017), whatever the
            scheduler; 0 starts at ``lr``.
    """

    def __init__(
        self,
        net: Mapping,
        loss: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None,
        class_names: Sequence[str],
        preprocessing: Mapping,
        inference: Mapping,
        scheduler_monitor: str = "val/loss",
        scheduler_frequency: int = 1,
        channels_last: bool = False,
        metrics: Sequence[str] = ("dice", "hd95", "nsd"),
        surface_metrics: bool = True,
        surface_tolerance_mm: float | Sequence[float] = 2.0,
        regions: Mapping[str, Sequence[int]] | None = None,
        ignore_index: int | None = None,
        nonfinite_loss: Literal["raise", "skip"] = "raise",
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_LOSS:
            raise ValueError(f"module.nonfinite_loss must be one of {NONFINITE_LOSS}, "
                             f"got {nonfinite_loss!r}")
        # Every stored config is checked before any of them is built: a checkpoint naming
        # os.system as its optimizer is refused on loading, not when training starts.
        for name, config in (("net", net), ("loss", loss), ("optimizer", optimizer),
                             ("scheduler", scheduler)):
            check_targets(config, where=name)
        self.save_hyperparameters()
        self.nonfinite_loss = nonfinite_loss
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) \
                or warmup_steps < 0:
            raise ValueError(f"module.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.skipped_batches = 0
        self.net: nn.Module = instantiate_trusted(net)
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.loss: nn.Module = instantiate_trusted(loss)
        self.class_names = list(class_names)
        self.preprocessor = Preprocessor.from_dict(preprocessing)
        self.inferer = SlidingWindowInferer.from_settings(inference)
        self.ignore_index = ignore_index
        _check_loss_ignores(self.loss, ignore_index)
        self.regions = _check_regions(regions or {}, len(self.class_names))
        self.metric_names = [m for m in _check_metrics(metrics)
                             if surface_metrics or m not in SURFACE_METRICS]
        if not self.metric_names:
            raise ValueError(f"module.metrics={list(metrics)} are all distance metrics, which "
                             "module.surface_metrics=false turns off: nothing left to score")
        if self.regions and "nsd" in self.metric_names and not np.isscalar(surface_tolerance_mm):
            raise ValueError(
                "module.surface_tolerance_mm must be one value when module.regions is set, "
                f"got {surface_tolerance_mm}"
            )
        self.val_metrics = self._metrics(surface_tolerance_mm)
        self.test_metrics = self._metrics(surface_tolerance_mm)
        # The largest-component cleaning chosen on the validation cases
        # (`PostprocessingSelector`); saved in each checkpoint, applied by test and predict.
        self.postprocessing: dict[str, Any] = dict(NO_POSTPROCESSING)

    def _metrics(self, tolerance_mm: float | Sequence[float]) -> nn.ModuleDict:
        """Accumulators by log name: per foreground class, then one per region."""
        factories: dict[str, Callable[[int], PerClassMean]] = {
            "dice": DiceMetric,
            "iou": IoUMetric,
            "volume_similarity": VolumeSimilarityMetric,
            "hausdorff": lambda k: HausdorffDistanceMetric(k, percentile=None),
            "hd95": lambda k: HausdorffDistanceMetric(k, percentile=95),
            "assd": AverageSurfaceDistanceMetric,
            "nsd": lambda k: SurfaceDiceMetric(k, tolerance_mm),
        }

        def build(num_classes: int) -> dict[str, PerClassMean]:
            return {name: factories[name](num_classes) for name in self.metric_names}

        metrics = build(len(self.class_names))
        for region in self.regions:
            # A region is a binary problem: background vs the union of its labels.
            metrics.update({f"{name}_region_{region}": m for name, m in build(2).items()})
        return nn.ModuleDict(metrics)

    def _update_metrics(
        self, metrics: nn.ModuleDict, pred: torch.Tensor, target: torch.Tensor,
        spacing: Sequence[float],
    ) -> None:
        surface = True
        if self.ignore_index is not None:
            ignored = target == self.ignore_index
            if ignored.any():
                # Counted as agreeing background: neither a hit nor a miss of any class.
                pred, target = pred.masked_fill(ignored, 0), target.masked_fill(ignored, 0)
                surface = False
        region_masks = {
            region: (torch.isin(pred, values).long(), torch.isin(target, values).long())
            for region, values in (
                (r, torch.tensor(v, device=pred.device)) for r, v in self.regions.items()
            )
        }
        surface_groups: dict[str, list[SurfaceMean]] = {}
        for name, metric in metrics.items():
            kind, _, region = name.partition("_region_")
            if kind not in SURFACE_METRICS:
                metric.update(*region_masks.get(region, (pred, target)), spacing)
            elif surface:
                surface_groups.setdefault(region, []).append(metric)
        # HD95, surface Dice, ...: one surface-distance computation per case and class.
        for region, group in surface_groups.items():
            update_surface_metrics(group, *region_masks.get(region, (pred, target)), spacing)

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.net(image.contiguous(memory_format=self.memory_format))

    def trained_network(self) -> TrainedNetwork:
        """This module's network as inference takes it: with its preprocessing, its
        sliding-window settings and the post-processing chosen so far, without training."""
        return TrainedNetwork(
            network=self.net, preprocessor=self.preprocessor, inferer=self.inferer,
            class_names=self.class_names, in_channels=self.hparams.net.get("in_channels"),
            regions=self.regions, postprocessing=dict(self.postprocessing),
            memory_format=self.memory_format)

    def predict_logits(
        self, image: torch.Tensor, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Whole-volume logits ``(N, K, x, y, z)`` by Gaussian-weighted sliding window."""
        return self.trained_network().logits(image, progress)

    # --- steps --------------------------------------------------------------------------------

    def training_step(
        self, batch: Mapping[str, torch.Tensor], batch_idx: int
    ) -> torch.Tensor | None:
        """The batch's loss; ``None`` (Lightning skips the optimizer step) for a non-finite
        loss under ``nonfinite_loss="skip"``."""
        # The forward pass updates normalisation statistics before the loss can be checked;
        # a skipped batch must leave them as they were, or its NaNs reach every later step.
        buffers = ([b.clone() for b in self.buffers()] if self.nonfinite_loss == "skip"
                   else None)
        output = self(batch["image"])
        label = batch["label"]
        first = output[0] if isinstance(output, (list, tuple)) else output
        if first.shape[-3:] != label.shape[-3:]:  # valid convolutions: score the centre only
            label = center_crop(label, first.shape[-3:])
        loss = self.loss(output, label)
        if not torch.isfinite(loss):
            return self._nonfinite(loss, batch_idx, buffers)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch["image"].shape[0])
        return loss

    def _nonfinite(
        self, loss: torch.Tensor, batch_idx: int, buffers: list[torch.Tensor] | None
    ) -> None:
        where = (f"global step {self.global_step} (epoch {self.current_epoch}, "
                 f"batch {batch_idx})")
        if self.nonfinite_loss == "raise":
            raise FloatingPointError(
                f"training loss is {loss.item()} at {where}; check the data and the learning "
                "rate, or set module.nonfinite_loss=skip to skip such batches"
            )
        with torch.no_grad():
            for buffer, saved in zip(self.buffers(), buffers or []):
                buffer.copy_(saved)
        self.skipped_batches += 1
        log.warning("training loss is %s at %s: batch skipped (%d so far)", loss.item(), where,
                    self.skipped_batches)
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True,
                 on_epoch=False)
        return None

    def _evaluate(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        logits = self.predict_logits(batch["image"])
        loss = self.loss(logits, batch["label"])
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=1,
                 sync_dist=True)
        return logits

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict:
        """Returns the predicted labels, which callbacks (`ValidationImageLogger`,
        `PostprocessingSelector`) read."""
        logits = self._evaluate(batch, "val")
        prediction = logits.argmax(1)
        self._update_metrics(self.val_metrics, prediction, batch["label"],
                             batch["meta"]["preprocessed"]["spacing"])
        return {"prediction": prediction}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict:
        """Scores the prediction in the original geometry, where the annotation lives."""
        logits = self._evaluate(batch, "test")
        original = batch["original_label"]
        # Caches written before traces existed only resampled: the original shape suffices.
        trace = batch["meta"].get("trace") or original.shape[-3:]
        probabilities = Preprocessor.restore(torch.softmax(logits[0].float(), dim=0), trace)
        # The labels `volseg predict` would write for this case.
        labels = class_labels(probabilities, self.postprocessing)
        self._update_metrics(self.test_metrics, torch.from_numpy(labels).to(logits.device)[None],
                             original, batch["meta"]["original"]["spacing"])
        return {"case_id": batch["case_id"], "prediction": labels,
                "geometry": batch["meta"]["original"]}

    def _log_metrics(self, metrics: nn.ModuleDict, stage: str) -> None:
        """Log ``<stage>/<metric>_<class>`` per foreground class and ``<stage>/<metric>``, the
        mean over classes, and ``<stage>/<metric>_region_<name>``; then reset."""
        for name, metric in metrics.items():
            per_class = metric.per_class()
            if "_region_" in name:
                self.log(f"{stage}/{name}", per_class[0])
            else:
                for class_name, value in zip(self.class_names[1:], per_class, strict=True):
                    self.log(f"{stage}/{name}_{class_name}", value)
                self.log(f"{stage}/{name}", per_class.nanmean(),
                         prog_bar=stage == "val" and name == "dice")
            metric.reset()

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        warnings = (
            batch_norm_warning(self.net, getattr(datamodule, "batch_size", None)),
            tile_warning(self.net, self.inferer.tile_size,
                         getattr(datamodule, "patch_size", None), "module.inference.tile_size"),
        )
        for warning in filter(None, warnings):
            if self.trainer.is_global_zero:
                log.warning(warning)

    def on_test_start(self) -> None:
        if self.trainer.is_global_zero:
            log.info("test post-processing (chosen on the validation cases): %s",
                     describe_postprocessing(self.postprocessing, self.class_names))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["postprocessing"] = dict(self.postprocessing)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints written before the choice existed were tested without post-processing.
        self.postprocessing = dict(checkpoint.get("postprocessing", NO_POSTPROCESSING))

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    # --- optimisation -------------------------------------------------------------------------

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Callable | None = None) -> None:
        """Lightning's step, after scaling the learning rate during the warm-up."""
        step = self.trainer.global_step
        if self.warmup_steps and step <= self.warmup_steps:
            for group in optimizer.param_groups:
                # The target rate rides in the param group, so it is in the optimizer's
                # checkpoint state and a run resumed mid-warm-up ramps to the same value.
                # During the warm-up the ramp sets the rate, over any scheduler's change.
                target = group.setdefault("warmup_lr", group["lr"])
                group["lr"] = target * min(1.0, (step + 1) / self.warmup_steps)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate_trusted(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:  # None, or the empty `scheduler=none` config
            return optimizer
        scheduler = instantiate_trusted(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.scheduler_monitor,
                "interval": "epoch",
                "frequency": self.hparams.scheduler_frequency,
            },
        }
