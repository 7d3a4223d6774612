"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`.

Composes conf/train.yaml with the command-line overrides and runs `volseg.train`; returns the
`optimized_metric` so Hydra sweepers (Optuna) can use it.
"""

import hydra
from omegaconf import DictConfig

import volseg


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = volseg.train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
