"""Leaderboard rows as Markdown tables: which columns, how each value is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from volseg.report.ranking import is_kfold, number_or_none, numeric_columns


def _stage(metric: str) -> str:
    """``val/dice`` -> ``val/``: the prefix of the columns shown beside the metric."""
    return metric.rpartition("/")[0] + "/" if "/" in metric else ""


def display_columns(rows: Sequence[dict[str, Any]], metric: str) -> list[tuple[str, str]]:
    """(row key, Markdown header) of the measured columns: metric, Dice per class, HD95, size."""
    stage = _stage(metric)
    present = numeric_columns(rows)
    dice, hd95 = f"{stage}dice", f"{stage}hd95"
    columns = [(metric, f"{metric} (mm)" if metric == hd95 else metric)]
    if dice in present:
        columns.append((dice, dice))
    columns += [(k, f"Dice {k[len(dice) + 1:]}") for k in present if k.startswith(f"{dice}_")]
    if hd95 in present:
        columns.append((hd95, f"{hd95} (mm)"))
    columns += [(k, h) for k, h in (("parameters", "parameters"), ("epochs", "epochs"),
                                    ("wall_time_s", "wall time")) if k in present]
    # The ranking metric is shown first, and once.
    return [c for i, c in enumerate(columns) if i == 0 or c[0] != metric]


def format_value(key: str, value: Any) -> str:
    """One cell: parameters with separators, wall time in min and s, metrics to 3 decimals."""
    number = number_or_none(value)
    if number is None:
        return "—"
    if key.startswith("wall_time_s"):
        minutes, seconds = divmod(round(number), 60)
        return f"{minutes} min {seconds} s" if minutes else f"{number:.1f} s"
    if key.startswith(("parameters", "epochs")):
        return f"{number:,.0f}" if number == round(number) else f"{number:,.1f}"
    if "hd95" in key:  # mm: a hundredth of a millimetre is already below any voxel size
        return f"{number:.2f}"
    return f"{number:.3f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows += ["| " + " | ".join(_cell(c) for c in line) + " |" for line in lines]
    return "\n".join(rows)


def jobs_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """The per-job Markdown table, rows in the order given (rank them first)."""
    columns = display_columns(rows, metric)
    folds = is_kfold(rows)
    errors = any(r["error"] for r in rows)
    header = ["#", "configuration", *(["fold"] if folds else []), "status",
              *(h for _, h in columns), *(["error"] if errors else []), "job"]
    lines = []
    for number, row in enumerate(rows, 1):
        line = [str(number), row["configuration"], *([_fold_text(row)] if folds else []),
                row["status"], *(format_value(k, row.get(k)) for k, _ in columns),
                *([row["error"] or ""] if errors else []), row["job"]]
        lines.append(line)
    return _markdown(header, lines)


def _fold_text(row: dict[str, Any]) -> str:
    return "" if row["fold"] is None else str(row["fold"])


def folds_table(groups: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """The per-configuration Markdown table: ``mean ± std`` cells, folds completed / run."""
    errors = any(g["error"] for g in groups)
    header = ["#", "configuration", "folds", "status", *(h for _, h in columns),
              *(["error"] if errors else [])]
    lines = []
    for number, group in enumerate(groups, 1):
        cells = []
        for key, _ in columns:
            mean = format_value(f"{key}_mean", group.get(f"{key}_mean"))
            std = group.get(f"{key}_std")
            cells.append(mean if std is None else f"{mean} ± {format_value(f'{key}_std', std)}")
        lines.append([str(number), group["configuration"],
                      f"{group['folds_completed']}/{group['folds']}", group["status"], *cells,
                      *([group["error"] or ""] if errors else [])])
    return _markdown(header, lines)
