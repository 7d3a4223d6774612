"""``volseg train [group=option ...] [key=value ...]``: train, validate and test a model.

Composes ``train.yaml`` with the command-line overrides and runs `volseg.engine.train.train`;
returns ``optimized_metric`` (a list of them: one value each) so Hydra sweepers (Optuna) can
use it, or `volseg.sweep.pruning.Pruned` when the Optuna pruner stopped the run.
``train.py`` at the top of a checkout is the same command.
"""

import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

import volseg  # noqa: F401 - registers the config resolvers
from volseg.planning.plan_file import register_plan_files
from volseg.runs.compose import CONFIG_PATH

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train(cfg: DictConfig) -> Any:
    # Imported here, not at the top: the engine pulls in Lightning (seconds), which a sweep's
    # launching process (submitit, Optuna) and `--cfg`/`--help` do not need.
    from volseg.engine.train import recording_failure
    from volseg.engine.train import train as run
    from volseg.sweep.pruning import Pruned

    try:
        with recording_failure(cfg.paths.output_dir):
            metrics = run(cfg)
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed job must not stop the others: it is recorded as failed in its
        # metrics.json and returns no objective, which the Optuna sweeper marks a failed trial.
        log.exception("job failed; the sweep goes on")
        return None
    if metrics.get("status") == "pruned":
        return Pruned(metrics["pruned_value"])
    objective = cfg.get("optimized_metric")
    if objective is None or isinstance(objective, str):
        return metrics.get(objective)
    return [metrics.get(name) for name in objective]  # a multi-objective study


def register_sweeper() -> None:
    """Make volseg's Optuna sweeper known to Hydra however volseg was installed.

    Hydra finds plugins by listing the ``hydra_plugins`` folders on ``sys.path``: a wheel's
    is found, but an editable install's is not (its import hook cannot be listed).
    """
    from hydra_plugins.volseg_optuna_sweeper import VolsegOptunaSweeper

    Plugins.instance().register(VolsegOptunaSweeper)


def main() -> None:
    """Entry point: the command line is read from ``sys.argv``."""
    register_sweeper()
    sys.argv[1:] = register_plan_files(sys.argv[1:])
    train()
