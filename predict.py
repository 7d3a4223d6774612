"""Segment volumes with a trained checkpoint.

`python predict.py ckpt_path=<model.ckpt> input=<file or folder> output=<folder>` writes one
label map per input volume, with exactly the input's shape, spacing, origin and direction.
Exits with status 1 when any case failed (the others are still written).
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

import volseg  # noqa: F401 - registers the config resolvers
from volseg.inference.predictor import predict_cases

log = logging.getLogger("predict")


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    summary = predict_cases(
        cfg.ckpt_path, cfg.input, cfg.output, device=cfg.device,
        tile_size=cfg.tile_size, overlap=cfg.overlap, batch_size=cfg.batch_size,
    )
    log.info("wrote %d prediction(s) to %s", len(summary["written"]), cfg.output)
    if summary["failed"]:
        for case_id, reason in summary["failed"]:
            log.error("FAILED %s: %s", case_id, reason)
        sys.exit(1)


if __name__ == "__main__":
    main()
