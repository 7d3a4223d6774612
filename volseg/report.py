"""``volseg report <multirun dir>``: a leaderboard of every job of a sweep.

Reads each job folder's ``.hydra/overrides.yaml`` and ``metrics.json`` (written by
`volseg.engine.train.train`, or `write_failure` for a job that raised) and ranks the jobs by
``--metric`` (default ``val/dice``, highest first; failed and missing jobs last). A job folder
without ``metrics.json`` was killed or is still running: it is listed as ``missing``.

A job is named by its *configuration*: the overrides that differ between the jobs read
(``model=unet3d loss=dice``); the overrides every job shares are printed once above the table.
When the jobs override ``data.fold`` (``-m data.fold=0,1,2,3,4``, possibly crossed with other
overrides), the jobs whose overrides differ only in the fold form one configuration, reported
as mean ± sample standard deviation (n - 1) over its completed folds for every numeric column.

Writes into the (first) folder given, or ``--output``:

- ``leaderboard.md``: the ranking (and, for k-fold sweeps, every job below it);
- ``leaderboard.csv``: the ranking, one row per job, or per configuration for k-fold sweeps
  (``<column>_mean`` and ``<column>_std`` for every numeric column);
- ``leaderboard_jobs.csv``: k-fold sweeps only, one row per job;
- ``leaderboard.png``: the metric per configuration as horizontal bars (error bars: std);

and prints the Markdown table. Exits 2 when a folder does not exist or holds no job.

From Python (a notebook): ``load_runs(path)`` gives one flat dictionary per job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from volseg.atomic import atomic_path, write_csv
from volseg.bench.report import write_report
from volseg.runs import METRICS_JSON
from volseg.sweep.study_report import write_study_report

FOLD_KEY = "data.fold"
# Keys of a row that describe the job rather than measure it.
_DESCRIPTIVE = ("job", "configuration", "fold", "status", "error", "overrides", "path",
                "best_model_path")
# Where a row without a metric value goes, after every row with one.
_STATUS_ORDER = {"completed": 0, "partial": 0, "pruned": 1, "failed": 2, "missing": 3}


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
        metrics = _read_metrics(job)
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


def _read_metrics(job: Path) -> dict[str, Any]:
    path = job / METRICS_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        # metrics.json is written atomically, so this is a file someone else wrote or edited.
        return {"status": "failed", "error": f"unreadable metrics.json: {error}"}


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
            values = [j[column] for j in completed if _number(j.get(column)) is not None]
            group[f"{column}_mean"] = statistics.mean(values) if values else None
            group[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
        group["error"] = "; ".join(errors) or None
        group["jobs"] = " ".join(j["job"] for j in jobs)
        table.append(group)
    return table


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def rank(rows: Sequence[dict[str, Any]], metric: str, lower_is_better: bool = False
         ) -> list[dict[str, Any]]:
    """``rows`` best first by ``metric``; rows without a value after, failed then missing."""
    sign = 1.0 if lower_is_better else -1.0

    def order(row: dict[str, Any]) -> tuple:
        value = _number(row.get(metric))
        if value is None:
            return (1, _STATUS_ORDER.get(row["status"], 3), 0.0)
        return (0, 0, sign * value)

    # sorted() is stable: ties keep job order.
    return sorted(rows, key=order)


# ---------------------------------------------------------------------------------------------
# Output


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
    number = _number(value)
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


def plot_leaderboard(labels: Sequence[str], values: Sequence[float | None],
                     errors: Sequence[float | None] | None, texts: Sequence[str], xlabel: str,
                     title: str, path: Path) -> Path:
    """Horizontal bars of ``values`` in the order given (top down), error bars ``errors``.

    ``texts`` are written at the end of each bar (or of its error bar); a configuration without
    a value gets no bar, only its text (``failed``) in red. Saved as PNG, atomically.
    """
    # The object-oriented API with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 1.2 + 0.35 * len(labels)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(labels)))
    widths = [v if v is not None else 0.0 for v in values]
    xerr = [e or 0.0 for e in errors] if errors else [0.0] * len(labels)
    axes.barh(positions, widths, xerr=xerr if errors else None, color="tab:blue",
              ecolor="black", capsize=3)
    ends = [w + e for w, e in zip(widths, xerr)]
    for position, value, end, text in zip(positions, values, ends, texts):
        axes.text(end, position, f" {text}", va="center", fontsize=8,
                  color="black" if value is not None else "tab:red")
    axes.set_yticks(positions, [_shorten(label) for label in labels], fontsize=8)
    axes.invert_yaxis()
    # Room on the right for the texts.
    axes.set_xlim(0, max(ends, default=0.0) * 1.3 or 1.0)
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    return path


def _no_value(status: str) -> str:
    """What a bar without a value says: why, when the job did not complete."""
    return status if status in ("pruned", "failed", "missing") else "no value"


def _shorten(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


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
    values = [_number(j.get(metric)) for j in jobs]
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
    values = [_number(g.get(f"{metric}_mean")) for g in groups]
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
    if not any(_number(r.get(metric)) is not None for r in rows):
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``volseg report``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="volseg report", description=__doc__,
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


if __name__ == "__main__":
    sys.exit(main())
