"""An evaluation report as a table: Markdown for ``evaluation.md``, Rich for the terminal."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from volseg.io.atomic import atomic_path

HEADINGS = {"dice": "Dice", "iou": "IoU", "volume_similarity": "vol. sim.",
            "hausdorff": "HD mm", "hd95": "HD95 mm", "assd": "ASSD mm", "surface_dice": "NSD"}


def _cell(statistics: dict) -> str:
    """``mean ± std``, with the cases left out: undefined (NaN) and infinite distances."""
    if statistics["mean"] is None:
        text = "—"
    else:
        text = f"{statistics['mean']:.4f} ± {statistics['std']:.4f}"
    notes = []
    if statistics["infinite"]:
        notes.append(f"{statistics['infinite']} inf")
    if statistics["undefined"]:
        notes.append(f"{statistics['undefined']} undef.")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _rows(report: Mapping[str, Any]) -> list[list[str]]:
    metrics = report["settings"]["metrics"]
    rows = [[name, *(_cell(values[m]) for m in metrics), str(values[metrics[0]]["n"])]
            for name, values in report["summary"].items()]
    for group, means in report["mean"].items():
        label = "mean over classes" + (" (with background)" if group == "all_classes" else "")
        rows.append([label, *("—" if means[m] is None else f"{means[m]:.4f}" for m in metrics),
                     ""])
    return rows


FOOTNOTE = ("Mean ± std over the cases where the value is finite. \"inf\": a structure in only "
            "one of prediction and reference, whose distances are infinite; \"undef.\": in "
            "neither map (NaN). Both are left out of the mean and counted in brackets.")


def write_markdown(report: Mapping[str, Any], path: Path) -> Path:
    """The summary as a Markdown table, with the footnote on infinite and undefined values."""
    metrics = report["settings"]["metrics"]
    header = ["structure", *(HEADINGS[m] for m in metrics), "cases"]
    lines = [f"# Evaluation: {len(report['cases'])} case(s) scored, {len(report['failed'])} "
             f"failed, {len(report['unpredicted'])} reference(s) without a prediction", "",
             f"`pred={report['settings']['pred']}`, surface Dice tolerance "
             f"{report['settings']['tolerance_mm']} mm.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += ["", FOOTNOTE, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


def print_summary(report: dict) -> None:
    """Print `summary_table`; without a terminal (logs) wide enough to keep every name."""
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(summary_table(report))


def summary_table(report: dict) -> Table:
    """The summary as a Rich table: mean ± std per structure and metric, then the class means."""
    metrics = report["settings"]["metrics"]
    table = Table(title=f"{len(report['cases'])} case(s) scored, {len(report['failed'])} failed, "
                        f"{len(report['unpredicted'])} reference(s) without a prediction",
                  caption=FOOTNOTE)
    table.add_column("structure")
    for metric in metrics:
        table.add_column(HEADINGS[metric], justify="right")
    table.add_column("cases", justify="right")
    for row in _rows(report):
        table.add_row(*row)
    return table
