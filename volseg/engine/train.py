"""One training run from a composed config: fit, validate and test the best model, report."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import rich
import rich.syntax
import rich.tree
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities import rank_zero_only

from volseg.engine.best_checkpoint import BestCheckpoint
from volseg.engine.launch import ddp_job, use_rank_command
from volseg.engine.module import SegmentationModule
from volseg.engine.smoothed_metric import SmoothedMetric
from volseg.io.atomic import write_json
from volseg.runs import METRICS_JSON, last_checkpoint, metric_value, write_resolved_config
from volseg.runs.resolvers import LAST, resolve_ckpt_path
from volseg.sweep.pruning import OptunaPruning

log = logging.getLogger(__name__)

# Printed first in the config tree: the groups a user most often overrides.
_TREE_ORDER = ("data", "model", "loss", "optimizer", "scheduler", "trainer", "callbacks")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (unless ``cfg.train`` is false), then validate and test the best checkpoint.

    Writes ``metrics.json`` into ``cfg.paths.output_dir`` and returns the same dictionary:
    flat metric names (``val/dice``, ``test/dice_lesion``, ...) mapped to floats, plus
    ``status`` (``"completed"``), ``best_model_path``, ``epochs``, ``parameters`` (trainable
    parameters of the network) and ``wall_time_s``. A run that raises leaves
    `write_failure`'s record there instead, when its caller writes one.

    ``ckpt_path`` resumes training (weights, optimizer, scheduler, callbacks, epoch) from a
    checkpoint file, or from ``last``: the newest ``last.ckpt`` under
    ``<paths.log_dir>/<task_name>/runs`` (`volseg.runs.resolvers.resolve_ckpt_path`). Under DDP
    every rank runs this function; only rank 0 writes ``metrics.json``.
    """
    with ddp_job():  # a sweep's next job in this process starts its own DDP ranks
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if rank_zero_only.rank == 0:
        print_config_tree(cfg)
        write_resolved_config(cfg, cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    own_last = last_checkpoint(cfg.paths.output_dir)
    if ckpt_path == LAST and cfg.get("train", True) and own_last.is_file():
        # Hydra already chose that run's folder for ckpt_path=last (resume_dir): take its
        # checkpoint instead of searching again, as each DDP rank would, each on its own.
        ckpt_path = str(own_last)
    ckpt_path = resolve_ckpt_path(ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name / "runs")
    if ckpt_path is not None:
        # Before the data and model are built: minutes of caching must not end in a shape error.
        check_checkpoint_classes(ckpt_path, cfg.data.num_classes)

    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    if not loggers:
        # Lightning refuses a learning-rate monitor without a logger to write to: with
        # `logger=none` the default callbacks still run, minus that one.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    use_rank_command()  # strategy=ddp under `-m`: extra ranks run this job, not the sweep
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    pruning = next((c for c in callbacks if isinstance(c, OptunaPruning)), None)

    if cfg.get("train", True):
        # weights_only: a checkpoint is a pickle; ours hold only tensors and plain data.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if pruning is not None and pruning.pruned:
            return _pruned(cfg, trainer, module, pruning.value, started)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        ckpt_path = best or None
        if not best:
            log.warning("no best checkpoint was saved; evaluating the final weights")
    elif ckpt_path is None:
        raise ValueError("train=false needs ckpt_path=<checkpoint> to evaluate")

    metrics: dict[str, Any] = {}
    if _best_is_latest_validation(trainer, ckpt_path):  # false without a fit in this call
        # The last round scored the best checkpoint's weights: validating it again would
        # repeat that round to the digit, at the cost of a whole validation pass.
        metrics.update(_latest_validation(trainer))
    else:
        metrics.update(_floats(trainer.validate(module, datamodule=datamodule,
                                                ckpt_path=ckpt_path, weights_only=True)))
    if cfg.get("test", True):
        metrics.update(_floats(trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path,
                                            weights_only=True)))
    metrics.update(
        status="completed",
        best_model_path=str(ckpt_path or ""),
        epochs=trainer.current_epoch,
        parameters=sum(p.numel() for p in module.net.parameters() if p.requires_grad),
        wall_time_s=round(time.perf_counter() - started, 1),
    )
    if trainer.is_global_zero:  # every DDP rank has the same, synced metrics
        write_json(metrics, Path(cfg.paths.output_dir) / METRICS_JSON)
        log.info("metrics written to %s", Path(cfg.paths.output_dir) / METRICS_JSON)
    return metrics


def _pruned(cfg: DictConfig, trainer: pl.Trainer, module: SegmentationModule,
            value: float | None, started: float) -> dict[str, Any]:
    """A run the Optuna pruner stopped: recorded as pruned with its last reported value, and
    neither validated again nor tested (that is the time pruning saves)."""
    metrics = {"status": "pruned", "pruned_value": value, str(cfg.optimized_metric): value,
               "epochs": trainer.current_epoch,
               "parameters": sum(p.numel() for p in module.net.parameters() if p.requires_grad),
               "wall_time_s": round(time.perf_counter() - started, 1)}
    if trainer.is_global_zero:
        write_json(metrics, Path(cfg.paths.output_dir) / METRICS_JSON)
    return metrics


def check_checkpoint_classes(ckpt_path: str | Path, num_classes: int) -> None:
    """Refuse a checkpoint trained for another number of classes than ``data.num_classes``.

    Reads only the checkpoint's stored hyperparameters, with ``weights_only=True`` (no code
    from the file runs here) and memory-mapped (the weights are not read into memory).

    Raises:
        ValueError: one line naming both class counts and ``ckpt_path``.
    """
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        # Not loadable as plain data: Lightning's own loading decides what happens to it.
        log.warning("%s: class count not checked (%s)", ckpt_path, str(error).splitlines()[0])
        return
    class_names = (checkpoint.get("hyper_parameters") or {}).get("class_names")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"ckpt_path={ckpt_path} was trained for {len(class_names)} classes "
            f"({', '.join(map(str, class_names))}), but data.num_classes={num_classes}"
        )


@contextmanager
def recording_failure(output_dir: str | Path) -> Iterator[None]:
    """Run the block; if it raises, `write_failure` into ``output_dir``, then re-raise."""
    started = time.perf_counter()
    try:
        yield
    except Exception as error:
        write_failure(error, output_dir, time.perf_counter() - started)
        raise


def write_failure(error: BaseException, output_dir: str | Path, wall_time_s: float) -> None:
    """Record a run that raised in ``<output_dir>/metrics.json``: status, one-line error, time.

    Sweeps go on past a failed job; this record is how `volseg.report` lists it as failed.
    Under DDP only rank 0 writes it.
    """
    if rank_zero_only.rank != 0:
        return
    # The cause, not Hydra's "Error in call to target" around it.
    while isinstance(error, InstantiationException) and error.__cause__:
        error = error.__cause__
    message = str(error).splitlines()[0] if str(error) else ""
    write_json({"status": "failed", "error": f"{type(error).__name__}: {message}".rstrip(": "),
                "wall_time_s": round(wall_time_s, 1)}, Path(output_dir) / METRICS_JSON)


def build_module(cfg: DictConfig, datamodule: Any) -> SegmentationModule:
    """The LightningModule from ``cfg.module``, with everything resolved to plain data.

    Plain data is what lets ``load_from_checkpoint`` rebuild the module with no config at hand.
    """
    module_cfg = OmegaConf.to_container(cfg.module, resolve=True)
    # Dataset statistics (ct_percentile) are part of the preprocessing the checkpoint keeps.
    datamodule.ensure_statistics()
    return instantiate(
        module_cfg, preprocessing=datamodule.preprocessor.to_dict(), _recursive_=False,
        _convert_="all",
    )


def _best_is_latest_validation(trainer: pl.Trainer, ckpt_path: str | None) -> bool:
    best = trainer.checkpoint_callback
    return (isinstance(best, BestCheckpoint) and best.best_is_latest_validation
            and ckpt_path == best.best_model_path)


def _latest_validation(trainer: pl.Trainer) -> dict[str, float | None]:
    """The latest validation round's ``val/`` metrics, as ``trainer.validate`` would return
    them: what the module and callbacks logged, without the smoothed values that
    `SmoothedMetric` publishes during fitting only."""
    smoothed = {c.name for c in trainer.callbacks if isinstance(c, SmoothedMetric)}
    return _floats([{name: value for name, value in trainer.callback_metrics.items()
                     if name.startswith("val/") and name not in smoothed}])


def _floats(results: list[dict]) -> dict[str, float | None]:
    """Lightning's result dicts as plain floats; NaN (undefined metric) becomes JSON null."""
    merged: dict[str, float | None] = {}
    for result in results:
        merged.update((name, metric_value(value)) for name, value in result.items())
    return merged


def print_config_tree(cfg: DictConfig) -> None:
    """Print the composed config as a Rich tree, the commonly changed groups first."""
    tree = rich.tree.Tree("config", guide_style="dim")
    keys = [k for k in _TREE_ORDER if k in cfg] + [k for k in cfg if k not in _TREE_ORDER]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=False) if isinstance(value, DictConfig) else str(
            value)
        tree.add(str(key)).add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
