"""The numbers of a leaderboard: numeric columns, mean ± std over folds, the ranking."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

# Keys of a row that describe the job rather than measure it.
_DESCRIPTIVE = ("job", "configuration", "fold", "status", "error", "overrides", "path",
                "best_model_path")


# Where a row without a metric value goes, after every row with one.
_STATUS_ORDER = {"completed": 0, "partial": 0, "pruned": 1, "failed": 2, "missing": 3}


def numeric_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Keys holding numbers (or None) in any row, first-seen order; descriptive keys left out."""
    columns: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in _DESCRIPTIVE and (value is None or isinstance(value, (int, float))) \
                    and not isinstance(value, bool):
                columns.setdefault(key, None)
    return list(columns)


def is_kfold(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any job overrides ``data.fold``."""
    return any(r["fold"] is not None for r in rows)


def aggregate_folds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: the jobs whose overrides differ only in ``data.fold``.

    Every numeric column ``c`` becomes ``c_mean`` and ``c_std``, over the completed folds whose
    value is defined: the sample standard deviation (n - 1, `statistics.stdev`), None for fewer
    than two values. ``folds`` counts the jobs, ``folds_completed`` those completed; ``status``
    is ``completed`` (all), ``partial`` (some), else ``failed`` or ``missing``; ``error`` joins
    the failed folds' errors. Jobs without a fold override stay one configuration each.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = row["configuration"] if row["fold"] is not None else f"job:{row['path']}"
        groups.setdefault(key, []).append(row)
    columns = numeric_columns(rows)
    table = []
    for jobs in groups.values():
        completed = [j for j in jobs if j["status"] == "completed"]
        statuses = {j["status"] for j in jobs}
        if len(completed) == len(jobs):
            status = "completed"
        elif completed:
            status = "partial"
        else:
            status = "failed" if "failed" in statuses else "missing"
        errors = [f"fold {j['fold']}: {j['error']}" if j["fold"] is not None else j["error"]
                  for j in jobs if j["error"]]
        group: dict[str, Any] = {
            "configuration": jobs[0]["configuration"],
            "folds": len(jobs),
            "folds_completed": len(completed),
            "status": status,
        }
        for column in columns:
            values = [j[column] for j in completed if number_or_none(j.get(column)) is not None]
            group[f"{column}_mean"] = statistics.mean(values) if values else None
            group[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
        group["error"] = "; ".join(errors) or None
        group["jobs"] = " ".join(j["job"] for j in jobs)
        table.append(group)
    return table


def number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def rank(rows: Sequence[dict[str, Any]], metric: str, lower_is_better: bool = False
         ) -> list[dict[str, Any]]:
    """``rows`` best first by ``metric``; rows without a value after, failed then missing."""
    sign = 1.0 if lower_is_better else -1.0

    def order(row: dict[str, Any]) -> tuple:
        value = number_or_none(row.get(metric))
        if value is None:
            return (1, _STATUS_ORDER.get(row["status"], 3), 0.0)
        return (0, 0, sign * value)

    # sorted() is stable: ties keep job order.
    return sorted(rows, key=order)
