"""``volseg verify data=<name> [overrides]``: check a dataset before training on it.

Composes ``train.yaml`` with the overrides as ``volseg train`` would (``--config-dir DIR``
adds a folder of your own configs), builds ``cfg.data`` and checks every case the layout lists
with the checks the cache build runs (`volseg.data.case_checks.check_case`): missing or unreadable
files (a truncated NIfTI included), image channels other than ``data.in_channels``, label grid
(shape, spacing, origin, direction) different from the image's, label values outside
``0..data.num_classes-1``, NaN/inf voxels.
Prints one line per problem, naming the file, then a summary table. Nothing is trained,
cached or written (the built-in synthetic dataset is generated first if it is missing).

Exit status: 0 when every case passed, 1 when a problem was found, 2 for a bad command line.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from collections.abc import Sequence

from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

import volseg  # noqa: F401 - registers the config resolvers
from volseg.data import SegmentationDataModule
from volseg.data.case_checks import PROBLEM_KINDS, CaseProblem, case_problems
from volseg.data.case_pool import map_cases
from volseg.runs.compose import compose_config, split_config_dir

# What each kind of problem means, for the summary table.
KIND_HELP = {
    "dataset": "no case list, or layout != config",
    "missing": "image or label file missing",
    "unreadable": "not a readable 3D volume, or truncated",
    "channels": "image channels != data.in_channels",
    "geometry": "label grid differs from the image's",
    "labels": "label values outside 0..num_classes-1",
    "non-finite": "NaN or inf voxels",
}


def verify_datamodule(datamodule: SegmentationDataModule) -> tuple[int, list[CaseProblem]]:
    """Check every case of a `SegmentationDataModule`; return (cases checked, problems).

    A layout that cannot list its cases at all gives one ``dataset`` problem and no cases.
    """
    try:
        datamodule.layout.prepare()
        cases = datamodule.cases()
    except (OSError, ValueError) as error:
        kind = "missing" if isinstance(error, FileNotFoundError) else "dataset"
        return 0, [CaseProblem("", kind, str(error))]
    check = functools.partial(case_problems, datamodule.layout,
                              num_classes=datamodule.num_classes,
                              in_channels=datamodule.in_channels,
                              ignore_index=datamodule.ignore_index)
    results = map_cases(check, cases, datamodule.cache_workers, "checking")
    return len(cases), [p for _, found in results for p in found]


def summary_table(checked: int, problems: Sequence[CaseProblem]) -> Table:
    """Problems and affected cases per kind of check."""
    bad_cases = {p.case_id for p in problems if p.case_id}
    table = Table(title=f"{checked} case(s) checked, {len(bad_cases)} with problems")
    table.add_column("check")
    table.add_column("problems", justify="right")
    table.add_column("cases", justify="right")
    table.add_column("what it means")
    per_kind = Counter(p.kind for p in problems)
    cases_per_kind = Counter(kind for kind, _ in {(p.kind, p.case_id) for p in problems
                                                  if p.case_id})
    for kind in PROBLEM_KINDS:
        table.add_row(kind, str(per_kind[kind]), str(cases_per_kind[kind]), KIND_HELP[kind])
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Verify the dataset that ``argv`` (Hydra overrides) configures; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(highlight=False)
    if any(arg in ("-h", "--help") for arg in argv):
        console.print(__doc__.strip(), markup=False)
        return 0
    try:
        config_dir, overrides = split_config_dir(argv)
        cfg = compose_config(overrides, config_dir=config_dir)
        datamodule = instantiate(cfg.data)
    except (HydraException, OmegaConfBaseException, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    checked, problems = verify_datamodule(datamodule)
    for problem in problems:
        print(problem, flush=True)  # plain print: a long path must not be wrapped
    console.print(summary_table(checked, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
