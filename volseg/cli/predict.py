"""``volseg predict ckpt_path=<model.ckpt> input=<volumes> output=<folder>``: segment volumes.

Or ``data=<name> [data.root=...] split=test`` instead of ``input``: the cases of a data
config's split, read by its layout and scored against their labels in the same call. Writes
one label map per case, with exactly the input's shape, spacing, origin and direction. Exits
with status 1 when any case failed (the others are still written), 2 when nothing could start
(no input, a name clash, an output that would be replaced). ``predict.py`` at the top of a
checkout is the same command.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import volseg  # noqa: F401 - registers the config resolvers
from volseg.engine.predict import predict_cases
from volseg.evaluation import dataset_references, evaluate, print_summary, references_under
from volseg.inference.inputs import dataset_cases
from volseg.io.names import volume_stem
from volseg.runs.compose import CONFIG_PATH

log = logging.getLogger("predict")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Entry point: the command line is read from ``sys.argv``."""
    try:
        if (cfg.input is None) == (cfg.get("data") is None):
            raise ValueError("give input=<volumes> or data=<name> (with split=), one of them")
        source = cfg.input if cfg.input is not None else dataset_cases(instantiate(cfg.data),
                                                                        cfg.split)
        if cfg.labels is not None:
            references_under(cfg.labels)  # a missing folder or no references: before any work
        try:
            settings = instantiate(cfg.predictor, _convert_="all")
        except InstantiationException as error:  # the option's own message, one line
            raise ValueError(f"predictor: {error.__cause__ or error}") from None
        summary = predict_cases(OmegaConf.to_container(cfg.ckpt_path)
                                if OmegaConf.is_config(cfg.ckpt_path) else cfg.ckpt_path,
                                source, cfg.output, settings, device=cfg.device,
                                overwrite=cfg.overwrite)
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        sys.exit(2)
    log.info("wrote %d prediction(s) to %s", len(summary["written"]), cfg.output)
    names = summary["class_names"]  # metrics named as in training
    references = None
    if cfg.input is None:
        references = dataset_references(source) or None
    elif cfg.labels is not None:
        try:  # again, now that the checkpoint's class count can be checked against the layout
            references = references_under(cfg.labels, len(names))
        except ValueError as error:
            log.error("%s", error)
            sys.exit(2)
    if references and summary["written"]:
        # Score what was just written, with the checkpoint's classes and regions.
        written = [volume_stem(Path(p)) for p in summary["written"]]
        report = evaluate(cfg.output, cfg.labels, Path(cfg.output) / "evaluation",
                          class_names=names, tolerance_mm=cfg.tolerance_mm, cases=written,
                          references=references, regions=summary["regions"])
        print_summary(report)
        summary["failed"] += report["failed"]
    if summary["failed"]:
        for case_id, reason in summary["failed"]:
            log.error("FAILED %s: %s", case_id, reason)
        sys.exit(1)
