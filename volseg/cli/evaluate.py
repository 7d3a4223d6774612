"""``volseg evaluate pred=<folder> gt=<folder>``: score label maps against references.

Writes ``evaluation.json``, ``evaluation.csv`` (and overlays with ``images=``) into ``output``
and prints a summary table (`volseg.evaluate.evaluate`). Exit status 1 when any case could not
be scored, 2 when nothing could (a missing folder, a bad setting).
"""

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

import volseg  # noqa: F401 - registers the config resolvers
from volseg.compose import CONFIG_PATH
from volseg.evaluate import evaluate, summary_table

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Entry point: the command line is read from ``sys.argv``."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    try:
        report = evaluate(settings["pred"], settings["gt"], settings["output"],
                          settings["num_classes"], settings["class_names"],
                          settings["tolerance_mm"], settings["images"])
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        sys.exit(2)
    Console().print(summary_table(report))
    for case, reason in report["failed"]:
        log.error("FAILED %s: %s", case, reason)
    log.info("reports written to %s", settings["output"])
    if report["failed"]:
        sys.exit(1)

