"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`.

Composes conf/train.yaml with the command-line overrides and runs `volseg.train`; returns the
`optimized_metric` so Hydra sweepers (Optuna) can use it.
"""

import logging
import math
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import volseg
from volseg.engine.train import write_failure

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    started = time.perf_counter()
    try:
        metrics = volseg.train(cfg)
    except Exception as error:
        write_failure(error, cfg.paths.output_dir, time.perf_counter() - started)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep one failed job must not stop the others: it is recorded as failed in its
        # metrics.json, and a NaN objective makes Optuna mark the trial failed.
        log.exception("job failed; the sweep goes on")
        return math.nan
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
