"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`.

Composes conf/train.yaml with the command-line overrides and runs `volseg.train`; returns the
`optimized_metric` so Hydra sweepers (Optuna) can use it.
"""

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import volseg

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not at the top: the engine pulls in Lightning (seconds), which a sweep's
    # launching process (submitit, Optuna) and `--cfg`/`--help` do not need.
    from volseg.engine.train import recording_failure

    try:
        with recording_failure(cfg.paths.output_dir):
            metrics = volseg.train(cfg)
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed job must not stop the others: it is recorded as failed in its
        # metrics.json and returns no objective, which the Optuna sweeper marks a failed trial.
        # (Not NaN: optuna 2.10 refuses NaN, and the sweeper's retry to mark the trial failed
        # passes the NaN again, which raises and ends the whole search.)
        log.exception("job failed; the sweep goes on")
        return None
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
