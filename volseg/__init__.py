"""volseg: 3D medical image segmentation with PyTorch Lightning and Hydra.

The Python API, for notebooks and scripts (each imports its machinery on first call, so
``import volseg`` stays light):

- `train`: a training run from overrides (or a composed config), like ``volseg train``;
- `compose_run`: the config ``volseg train <overrides>`` would run, its run folder made
  (``volseg.train(compose_run([...]))`` trains it, so a notebook may change it first);
- `predict`: label maps from a checkpoint, like ``volseg predict``;
- `load_run`: a run folder's metrics, per-epoch history and config;
- `load_runs`: a multirun folder as table rows (`volseg.report`).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from volseg.runs.compose import compose_run
from volseg.runs.resolvers import register_resolvers

if TYPE_CHECKING:
    from volseg.runs import Run

__version__ = "0.1.0"

register_resolvers()


def train(
    cfg: DictConfig | Sequence[str] | None = None,
    *,
    overrides: Sequence[str] = (),
    config_name: str = "train",
    output_dir: str | Path | None = None,
    config_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train, validate and test as ``volseg train <overrides>`` does.

    ``volseg.train(cfg)`` runs an already composed config (`compose_run`'s, the tests'); see
    `volseg.engine.train.train`. ``volseg.train(overrides=[...])`` (or the list alone,
    ``volseg.train([...])``) composes ``<config_name>.yaml`` first (`compose_run`) and makes
    the run folder the CLI would: ``<paths.log_dir>/<task_name>/runs/<time>_<pid>`` with
    ``paths.log_dir`` = ``outputs/`` under the current folder, or ``output_dir`` when given.
    That folder gets ``.hydra/``, the resolved ``config.yaml``, and, if the run raises, a
    failed-run ``metrics.json``. ``config_dir`` is a folder of your own configs
    (``experiment/mine.yaml``), searched after volseg's own, as
    ``volseg train --config-dir <folder>`` does.

    Returns:
        ``metrics.json``'s dictionary; composed from overrides, plus ``run_dir`` (the folder).
    """
    # Imported here so that `import volseg` (which registers the config resolvers) stays light.
    from volseg.engine.train import recording_failure
    from volseg.engine.train import train as _train

    if cfg is not None and not isinstance(cfg, DictConfig):
        cfg, overrides = None, [*cfg, *overrides]
    if cfg is not None:
        if overrides or output_dir is not None or config_dir is not None:
            raise ValueError("volseg.train takes a composed cfg or overrides/output_dir/"
                             "config_dir, not both")
        return _train(cfg)
    cfg = compose_run(overrides, config_name, output_dir, config_dir)
    run_dir = Path(cfg.paths.output_dir)
    # As train.py does: the run folder says it failed, and volseg.report lists it so.
    with recording_failure(run_dir):
        metrics = _train(cfg)
    return {**metrics, "run_dir": str(run_dir)}


def predict(ckpt_path: str | Path | Sequence[str | Path], input: str | Path,
            output: str | Path, **options: Any) -> dict[str, list]:
    """Label maps of every volume under ``input`` into ``output``, as ``volseg predict`` writes.

    ``options`` are `volseg.engine.predict.predict_cases`'s: ``device``, ``overwrite`` and the
    prediction options of `volseg.inference.settings.PredictionSettings` (``tile_size``,
    ``tta_axes``, ``mc_dropout``, ``save_probabilities``, ``keep_largest_component``, ...).

    Returns:
        ``{"written": [paths], "failed": [(case_id, reason)], "class_names": [...]}``.
    """
    from volseg.engine.predict import predict_cases

    return predict_cases(ckpt_path, input, output, **options)


def load_run(run_dir: str | Path) -> "Run":
    """A run folder's ``metrics``, per-epoch ``history`` and ``config``; see `volseg.runs`."""
    from volseg.runs import load_run as _load_run

    return _load_run(run_dir)


def load_runs(*paths: str | Path) -> list[dict[str, Any]]:
    """One row per job of multirun (or run) folders; see `volseg.report.load_runs`."""
    from volseg.report import load_runs as _load_runs

    return _load_runs(*paths)


__all__ = ["__version__", "compose_run", "load_run", "load_runs", "predict", "train"]
