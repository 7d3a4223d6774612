"""A sweep's job folders read into table rows: its overrides, metrics and configuration."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from volseg.runs import METRICS_JSON, read_metrics

FOLD_KEY = "data.fold"


def find_job_dirs(path: str | Path) -> list[Path]:
    """The job folders under ``path``: ``path`` itself if it is a run, else its run subfolders.

    A run folder holds ``.hydra/`` (written as a job starts) or ``metrics.json``. Subfolders are
    in job-number order (Hydra numbers them ``0, 1, ..., 10``), other names after, by name.

    Raises:
        FileNotFoundError: ``path`` is not a folder, or holds no run folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    if _is_run(path):
        return [path]
    jobs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_run(p)]
    if not jobs:
        raise FileNotFoundError(f"{path}: no job folders in it (none holds .hydra/ or "
                                "metrics.json)")
    return sorted(jobs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def _is_run(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / METRICS_JSON).is_file()


def load_runs(*paths: str | Path) -> list[dict[str, Any]]:
    """One flat dictionary per job of the multirun (or run) folders ``paths``, as a table row.

    Keys: ``job`` (the folder relative to the one holding every job: ``0``, ``1``, ...),
    ``path``, ``overrides`` (list of ``key=value``), ``configuration`` (the overrides that
    differ between the jobs, ``data.fold`` left out), ``fold`` (int, or None), ``status``
    (``completed``, ``failed`` or ``missing``), ``error`` (one line, or None), then every entry
    of ``metrics.json`` (``val/dice``, ``val/dice_<class>``, ``parameters``, ``epochs``,
    ``wall_time_s``, ...; an undefined metric is None). ``pandas.DataFrame(load_runs(p))``
    makes it a data frame.
    """
    job_dirs = [job for path in paths for job in find_job_dirs(path)]
    if not job_dirs:
        raise ValueError("load_runs needs at least one folder")
    # Jobs are named relative to the folder holding them all: "0", or "<sweep>/0" for several.
    base = Path(os.path.commonpath([job.absolute().parent for job in job_dirs]))
    rows = []
    for job in job_dirs:
        overrides = _read_overrides(job)
        metrics = read_metrics(job)
        status = metrics.pop("status", "completed") if metrics else "missing"
        fold = _fold(overrides)
        rows.append({
            "job": str(job.absolute().relative_to(base)),
            "path": str(job),
            "overrides": overrides,
            "configuration": "",
            "fold": fold,
            "status": status,
            "error": metrics.pop("error", None),
            **metrics,
        })
    labels = configuration_labels([r["overrides"] for r in rows])
    for row, label in zip(rows, labels):
        row["configuration"] = label
    return rows


def _read_overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in yaml.safe_load(path.read_text(encoding="utf-8")) or []]


def _key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``; ``~a`` -> ``a``."""
    return override.split("=", 1)[0].lstrip("+~")


def _fold(overrides: Sequence[str]) -> int | str | None:
    for override in overrides:
        if _key(override) == FOLD_KEY and "=" in override:
            value = override.split("=", 1)[1]
            return int(value) if value.lstrip("-").isdigit() else value
    return None


def configuration_labels(overrides: Sequence[Sequence[str]]) -> list[str]:
    """Each job's name: its overrides that are not the same in every job, ``data.fold`` out.

    A job whose overrides all match every other job's is ``(defaults)`` when it has none,
    ``(common overrides)`` otherwise.
    """
    settings = [{_key(o): o for o in job} for job in overrides]
    keys = {k for s in settings for k in s}
    varying = {k for k in keys if len({s.get(k) for s in settings}) > 1} - {FOLD_KEY}
    labels = []
    for job, setting in zip(overrides, settings):
        label = " ".join(o for o in job if _key(o) in varying)
        if not label:
            label = "(common overrides)" if set(setting) - {FOLD_KEY} else "(defaults)"
        labels.append(label)
    return labels


def common_overrides(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The overrides every job has, in the first job's order (``data.fold`` left out)."""
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    return [o for o in rows[0]["overrides"] if o in shared and _key(o) != FOLD_KEY] if rows else []
