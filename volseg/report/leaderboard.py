"""A leaderboard of jobs, or of k-fold configurations, and the files that hold it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volseg.io.atomic import write_csv, write_report
from volseg.report.chart import plot_leaderboard
from volseg.report.jobs import FOLD_KEY, common_overrides, load_runs
from volseg.report.ranking import aggregate_folds, is_kfold, number_or_none, numeric_columns, rank
from volseg.report.tables import display_columns, folds_table, format_value, jobs_table
from volseg.sweep.study_report import write_study_report


def _no_value(status: str) -> str:
    """What a bar without a value says: why, when the job did not complete."""
    return status if status in ("pruned", "failed", "missing") else "no value"


@dataclass
class Leaderboard:
    """What `write_leaderboard` writes, before it is written."""

    table: str  # the ranking as Markdown, printed
    markdown: str  # the body of leaderboard.md: the ranking (and for k-fold, the jobs)
    explanation: str  # how it is ranked and what the cells are
    tables: dict[str, tuple[list[dict[str, Any]], list[str]]]  # CSV file name -> rows, columns
    labels: list[str]  # one bar per ranked row: its name, value, error and text
    values: list[float | None]
    errors: list[float | None] | None
    texts: list[str]
    xlabel: str


def jobs_leaderboard(rows: Sequence[dict[str, Any]], metric: str, lower_is_better: bool = False
                     ) -> Leaderboard:
    """One row (and bar) per job, best first."""
    jobs = rank(rows, metric, lower_is_better)
    table = jobs_table(jobs, metric)
    values = [number_or_none(j.get(metric)) for j in jobs]
    order = "lowest" if lower_is_better else "highest"
    return Leaderboard(
        table=table,
        markdown=table,
        explanation=(f"Jobs ranked by `{metric}` (of the best checkpoint), {order} first; "
                     "failed, then missing (no metrics.json: killed or still running) last."),
        tables={"leaderboard.csv": (jobs, job_csv_columns(rows, metric))},
        # A job whose overrides say nothing about it is named by its folder.
        labels=[j["job"] if j["configuration"].startswith("(") else j["configuration"]
                for j in jobs],
        values=values,
        errors=None,
        texts=[format_value(metric, v) if v is not None else _no_value(j["status"])
               for v, j in zip(values, jobs)],
        xlabel=metric,
    )


def folds_leaderboard(rows: Sequence[dict[str, Any]], metric: str, lower_is_better: bool = False
                      ) -> Leaderboard:
    """One row (and bar, with the std as error bar) per configuration, then every job."""
    groups = rank(aggregate_folds(rows), f"{metric}_mean", lower_is_better)
    position = {g["configuration"]: i for i, g in enumerate(groups)}
    jobs = sorted(rows, key=lambda r: (position.get(r["configuration"], len(groups)),
                                       _fold_order(r["fold"])))
    table = folds_table(groups, display_columns(rows, metric))
    group_columns = ["configuration", "folds", "folds_completed", "status",
                     *(f"{c}_{s}" for c in _numbers_metric_first(rows, metric)
                       for s in ("mean", "std")), "error", "jobs"]
    values = [number_or_none(g.get(f"{metric}_mean")) for g in groups]
    errors = [g.get(f"{metric}_std") for g in groups]
    texts = []
    for value, error, group in zip(values, errors, groups):
        text = _no_value(group["status"]) if value is None else format_value(metric, value)
        if error is not None:
            text += f" ± {format_value(metric, error)}"
        texts.append(f"{text}  ({group['folds_completed']}/{group['folds']} folds)")
    order = "lowest" if lower_is_better else "highest"
    return Leaderboard(
        table=table,
        markdown=f"{table}\n\n## Jobs\n\n{jobs_table(jobs, metric)}",
        explanation=(
            f"Configurations (jobs whose overrides differ only in `{FOLD_KEY}`) ranked by the "
            f"mean of `{metric}`, {order} first. Cells are mean ± sample standard deviation "
            "(n - 1) over the completed folds; folds is completed / run. Jobs below."),
        tables={"leaderboard.csv": (groups, group_columns),
                "leaderboard_jobs.csv": (jobs, job_csv_columns(rows, metric))},
        labels=[g["configuration"] for g in groups],
        values=values,
        errors=errors,
        texts=texts,
        xlabel=f"{metric}: mean ± sample std (n - 1) over completed folds",
    )


def _fold_order(fold: int | str | None) -> tuple:
    return (0, fold, "") if isinstance(fold, int) else (1, 0, str(fold))


def _numbers_metric_first(rows: Sequence[dict[str, Any]], metric: str) -> list[str]:
    return [metric, *(c for c in numeric_columns(rows) if c != metric)]


def job_csv_columns(rows: Sequence[dict[str, Any]], metric: str) -> list[str]:
    """The per-job CSV's columns: who, status, ``metric``, every other number, then the rest."""
    return ["job", "configuration", "fold", "status", *_numbers_metric_first(rows, metric),
            "error", "best_model_path", "overrides", "path"]


def write_leaderboard(paths: Sequence[str | Path], output: str | Path | None = None,
                      metric: str = "val/dice", lower_is_better: bool = False,
                      command: str = "volseg report") -> dict[str, Path]:
    """Read the jobs of ``paths``, write every leaderboard file, print the table.

    Args:
        paths: multirun folders, run folders, or a mix (`find_job_dirs`).
        output: the folder to write into; default the first of ``paths``.
        metric: the ``metrics.json`` key to rank by.
        lower_is_better: rank the lowest value first (``val/hd95``).
        command: the command line, quoted in leaderboard.md.

    Returns:
        The files written by name: ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.png``
        and, for k-fold sweeps, ``leaderboard_jobs.csv``; for an Optuna sweep also its study's
        ``study.csv``, ``optimization_history.png`` and ``param_importances.png``
        (`volseg.sweep.study_report`).
    """
    rows = load_runs(*paths)
    if not any(number_or_none(r.get(metric)) is not None for r in rows):
        found = ", ".join(numeric_columns(rows)) or "none"
        print(f"warning: no job has a value for {metric}; numeric columns: {found}",
              file=sys.stderr)
    board = (folds_leaderboard if is_kfold(rows) else jobs_leaderboard)(
        rows, metric, lower_is_better)
    output = Path(output) if output is not None else Path(paths[0])
    output.mkdir(parents=True, exist_ok=True)
    written = {name: write_csv(table, output / name, columns)
               for name, (table, columns) in board.tables.items()}
    written["leaderboard.png"] = plot_leaderboard(
        board.labels, board.values, board.errors, board.texts, board.xlabel,
        f"{output.name}: {metric}", output / "leaderboard.png")
    print(board.table)
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("completed", "pruned", "failed", "missing")}
    shared = common_overrides(rows)
    summary = (f"{len(rows)} jobs in `{', '.join(str(p) for p in paths)}`: "
               + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "pruned")
               + (f"; overrides every job shares: `{' '.join(shared)}`" if shared else ""))
    sections = [board.markdown]
    for path in paths:  # an Optuna sweep's study: its trials, charts and importances
        study_files, section = write_study_report(path, output)
        written.update(study_files)
        sections += [section] if section else []
    written["leaderboard.md"] = write_report(output / "leaderboard.md", "Leaderboard", command,
                                             summary, board.explanation, "\n\n".join(sections))
    for name, path in written.items():
        if name != "leaderboard.md":
            print(f"wrote {path}")
    return written
