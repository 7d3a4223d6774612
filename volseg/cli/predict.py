"""``volseg predict ckpt_path=<model.ckpt> input=<volumes> output=<folder>``: segment volumes.

Writes one label map per input case, with exactly the input's shape, spacing, origin and
direction. Exits with status 1 when any case failed (the others are still written).
``predict.py`` at the top of a checkout is the same command.
"""

import logging
import sys
from pathlib import Path

import hydra
import rich
from omegaconf import DictConfig, OmegaConf

import volseg  # noqa: F401 - registers the config resolvers
from volseg.compose import CONFIG_PATH
from volseg.evaluate import evaluate, summary_table
from volseg.inference.predictor import predict_cases, volume_stem

log = logging.getLogger("predict")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Entry point: the command line is read from ``sys.argv``."""
    # Plain lists for the list-valued options, not ListConfig.
    options = {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
               for key, value in cfg.items() if key not in ("paths", "hydra")}
    summary = predict_cases(
        options["ckpt_path"], cfg.input, cfg.output, device=cfg.device,
        tile_size=options["tile_size"], overlap=cfg.overlap, batch_size=cfg.batch_size,
        tta_axes=options["tta_axes"], mc_dropout=cfg.mc_dropout, uncertainty=cfg.uncertainty,
        save_probabilities=cfg.save_probabilities,
        keep_largest=options["keep_largest_component"], connectivity=cfg.connectivity,
        precision=str(cfg.precision),
    )
    log.info("wrote %d prediction(s) to %s", len(summary["written"]), cfg.output)
    if cfg.labels is not None and summary["written"]:
        # Score what was just written against reference labels of the same names.
        written = [volume_stem(Path(p)) for p in summary["written"]]
        names = summary["class_names"]  # metrics named as in training
        report = evaluate(cfg.output, cfg.labels, Path(cfg.output) / "evaluation",
                          num_classes=len(names), class_names=names,
                          tolerance_mm=cfg.tolerance_mm, cases=written)
        rich.print(summary_table(report))
        summary["failed"] += report["failed"]
    if summary["failed"]:
        for case_id, reason in summary["failed"]:
            log.error("FAILED %s: %s", case_id, reason)
        sys.exit(1)

