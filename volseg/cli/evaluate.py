"""``volseg evaluate pred=<folder> gt=<folder or dataset root>``: score label maps.

Or ``data=<name> [data.root=...] [split=...]`` instead of ``gt``: the references are that data
config's cases, read as training reads them. Writes ``evaluation.json``, ``.csv`` and ``.md``
(and overlays with ``images=``) into ``output`` and prints the summary table
(`volseg.evaluation.evaluate`). Exit status 1 when any case could not be scored, 2 when nothing
could (a missing folder, a bad setting).
"""

import logging
import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import volseg  # noqa: F401 - registers the config resolvers
from volseg.evaluation import dataset_references, evaluate, print_summary
from volseg.inference.inputs import dataset_cases
from volseg.runs.compose import CONFIG_PATH

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Entry point: the command line is read from ``sys.argv``."""
    try:
        settings = OmegaConf.to_container(cfg, resolve=True)
        references = None
        if cfg.get("data") is not None:
            if settings["gt"] is not None:
                raise ValueError("gt= and data= both name references: give one")
            references = dataset_references(dataset_cases(instantiate(cfg.data),
                                                          settings["split"]))
        report = evaluate(settings["pred"], settings["gt"], settings["output"],
                          settings["num_classes"], settings["class_names"],
                          settings["tolerance_mm"], settings["images"], references=references,
                          regions=settings["regions"], metrics=settings["metrics"],
                          include_background=settings["include_background"],
                          both_empty=settings["both_empty"])
    except (FileNotFoundError, ValueError) as error:
        log.error("%s", error)
        sys.exit(2)
    print_summary(report)
    for case, reason in report["failed"]:
        log.error("FAILED %s: %s", case, reason)
    log.info("reports written to %s", settings["output"])
    if report["failed"]:
        sys.exit(1)
