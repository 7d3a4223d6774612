"""``volseg bench <subcommand> ...``: one subcommand per benchmark module.

A benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int``; adding one
(``augment``, ``infer``, ``predict``, ``metrics``, ``data``, ``recipes``) is one more entry in
`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help); modules are imported only when their subcommand runs.
SUBCOMMANDS = {
    "models": ("volseg.bench.models", "parameters, forward+backward time and peak memory "
                                      "of every conf/model/*.yaml network"),
    "metrics": ("volseg.bench.metrics", "HD, HD95, ASSD and surface Dice against MONAI, "
                                        "SimpleITK and medpy on the same masks"),
    "augment": ("volseg.bench.augment", "augmented training patches per second: volseg's one "
                                        "composed resampling vs MONAI and TorchIO"),
    "infer": ("volseg.bench.infer", "sliding-window inference against MONAI's: probability "
                                    "agreement, time and peak RSS, and a fast mode"),
    "predict": ("volseg.bench.predict", "the whole volseg predict on one large CT (default "
                                        "512x512x400): wall time and peak memory"),
    "data": ("volseg.bench.data", "cache build time (in-process vs worker processes) and "
                                  "training RSS for growing dataset sizes"),
    "train": ("volseg.bench.train", "training steps per second with the real loader against "
                                    "a ready-made batch: the data pipeline's share of a step"),
    "nnunet": ("volseg.bench.nnunet", "volseg's complete plan against nnU-Net v2's own plan, "
                                      "training and prediction on the same cases"),
    "recipes": ("volseg.bench.recipes", "training recipes on both built-in phantoms: test "
                                        "Dice, validation-curve stability, wall time"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run the chosen benchmark, return its status."""
    parser = argparse.ArgumentParser(prog="volseg bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the chosen benchmark's module is imported (they pull in torchmetrics, MONAI, ...:
    # seconds each); the others need only their line in the help.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(subparser)
    args = parser.parse_args(argv)  # an unknown or missing subcommand exits here
    assert module is not None
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
