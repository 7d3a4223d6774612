"""The ``volseg`` command: ``volseg <subcommand> [arguments]``.

``volseg train``, ``predict`` and ``evaluate`` are Hydra apps over ``train.yaml``,
``predict.yaml`` and ``evaluate.yaml`` (``--help`` lists the config groups, ``--config-dir``
adds a folder of your own configs, ``-m`` sweeps); ``plan`` and ``verify`` take the same
overrides as ``train``; ``report`` and ``bench`` take options. Each subcommand's module is
imported only when it runs, so ``volseg --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with a `main()` that reads sys.argv, one-line help)
SUBCOMMANDS = {
    "train": ("volseg.cli.train", "train, validate and test a model (Hydra overrides; -m sweeps)"),
    "predict": ("volseg.cli.predict", "label maps of volumes from a trained checkpoint"),
    "evaluate": ("volseg.cli.evaluate", "score label maps against references (Dice, HD95, ...)"),
    "plan": ("volseg.cli.plan", "fingerprint a dataset; suggest its spacing and patch size"),
    "verify": ("volseg.cli.verify", "check every case of a dataset before training"),
    "report": ("volseg.cli.report", "leaderboard of a sweep or of runs: Markdown, CSV and PNG"),
    "bench": ("volseg.bench.__main__", "benchmarks against MONAI, TorchIO and others"),
}

USAGE = "usage: volseg <subcommand> [arguments]   (volseg <subcommand> --help for its own)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``volseg <subcommand> ...``; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, SUBCOMMANDS))
        lines = [USAGE, "", "subcommands:"]
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
        print("\n".join(lines))
        return 0 if argv else 2
    name, arguments = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"volseg: unknown subcommand {name!r}; one of {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    # Hydra and argparse read the command line from sys.argv; argv[0] names the program in
    # their usage and help lines.
    sys.argv = [f"volseg {name}", *arguments]
    status = module.main()
    # Hydra apps return None (or a sweep objective): success. The others return their status.
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
