"""``volseg report``: its command line (what it does: `volseg.report`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from volseg.report.leaderboard import write_leaderboard


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``volseg report``; returns the exit status."""
    from volseg import report  # its docstring is the command's description

    parser = argparse.ArgumentParser(prog="volseg report", description=report.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="DIR",
                        help="a multirun folder (outputs/train/multiruns/<time>_<pid>), a run "
                             "folder, or several")
    parser.add_argument("--metric", default="val/dice",
                        help="metrics.json key to rank by (default: val/dice)")
    parser.add_argument("--lower-is-better", action="store_true",
                        help="rank the lowest value first (val/hd95, val/loss)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="where to write the files (default: the first DIR)")
    args = parser.parse_args(argv)
    command = "volseg report " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    try:
        write_leaderboard(args.paths, args.output, args.metric, args.lower_is_better, command)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
