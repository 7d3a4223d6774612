"""A training run's folder: what it holds, and reading it back in one call.

A run folder (``outputs/train/runs/<time>_<pid>``, or one job of a multirun) holds:

- ``metrics.json``: the final metrics (`volseg.engine.train.train`);
- ``config.yaml``: the config with every interpolation resolved (`write_resolved_config`);
  ``.hydra/config.yaml`` is the same config as composed, interpolations unresolved;
- ``history.json`` / ``history.csv`` / ``training_history.png``: per-epoch metrics and curves
  (`volseg.engine.history.TrainingHistory`);
- ``checkpoints/``, ``predictions/``, ``tensorboard/``, ``csv/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from volseg.io.atomic import atomic_path

# The run folder's file names: spelt here only; the checkpoint folder is also
# conf/callbacks/default.yaml's `dirpath` (``${paths.output_dir}/checkpoints``).
METRICS_JSON = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"  # in CHECKPOINT_DIR
RESOLVED_CONFIG = "config.yaml"
# Written by `volseg.engine.history.TrainingHistory`.
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "training_history.png"


def metric_value(value: Any) -> float | None:
    """A logged metric (number or one-element tensor) as the run files store it: a float, with
    NaN (a metric undefined for every case) as ``None``, which JSON writes as ``null``."""
    value = float(value)
    return None if math.isnan(value) else value


def task_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without its ``hydra`` node: the settings of the task itself."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def write_resolved_config(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Write ``cfg`` with every interpolation resolved, ``hydra`` left out, as
    ``<output_dir>/config.yaml`` (atomically): the settings the run actually used.

    A value still missing (``???``) stays ``???``.
    """
    resolved = OmegaConf.to_container(task_config(cfg), resolve=True, throw_on_missing=False)
    path = Path(output_dir) / RESOLVED_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), encoding="utf-8")
    return path


@dataclass
class Run:
    """What `load_run` reads from a run folder.

    Attributes:
        path: the run folder.
        metrics: ``metrics.json`` (empty while the run is unfinished).
        history: ``history.json``, one dict per epoch (``epoch``, ``lr``,
            ``train/loss_epoch``, ``val/loss``, ``val/dice``, ``val/dice_<class>``, ...).
        config: ``config.yaml`` (resolved), else ``.hydra/config.yaml``, else None.
    """

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    config: DictConfig | None = None

    @property
    def checkpoint(self) -> Path | None:
        """The best checkpoint, else ``checkpoints/last.ckpt``, else None."""
        best = self.metrics.get("best_model_path")
        if best and Path(best).is_file():
            return Path(best)
        last = last_checkpoint(self.path)
        return last if last.is_file() else None


def last_checkpoint(run_dir: str | Path) -> Path:
    """Where ``run_dir`` keeps its newest state: ``<run_dir>/checkpoints/last.ckpt``."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``metrics.json``: empty while the run is unfinished (or was killed), and
    ``{"status": "failed", "error": ...}`` when the file cannot be read as JSON: it is written
    atomically, so someone else wrote or edited it."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return {"status": "failed", "error": f"unreadable {METRICS_JSON}: {error}"}


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder: final metrics, per-epoch history and config.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    metrics = read_metrics(path)
    config = None
    for candidate in (path / RESOLVED_CONFIG, path / ".hydra" / "config.yaml"):
        if candidate.is_file():
            config = OmegaConf.load(candidate)
            break
    history_file = path / HISTORY_JSON
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() \
        else []
    return Run(path=path, metrics=metrics, history=history, config=config)


__all__ = ["CHECKPOINT_DIR", "HISTORY_CSV", "HISTORY_JSON", "HISTORY_PNG", "LAST_CHECKPOINT",
           "METRICS_JSON", "RESOLVED_CONFIG", "Run", "last_checkpoint", "load_run",
           "read_metrics", "write_resolved_config"]
