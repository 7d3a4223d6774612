"""An Optuna sweep's study, charted beside its leaderboard (``volseg report <sweep folder>``).

The sweeper writes ``optuna_study.json`` (storage and study name) into the sweep folder; from
it this module reads the study and writes ``study.csv`` (every trial: number, state, value(s),
parameters, duration), ``optimization_history.png`` (each trial's value and the best so far;
pruned trials at their last value) and ``param_importances.png`` (the PED-ANOVA importance
of each parameter, from the completed trials), and gives a Markdown section for the
leaderboard: trials per state and the best trial. The same storage opens in optuna-dashboard.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from volseg.io.atomic import atomic_path, write_csv

log = logging.getLogger(__name__)

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def load_study(sweep_dir: str | Path) -> Any:
    """The study of an Optuna sweep folder, or ``None`` for another sweep (no study file)."""
    from volseg.sweep.optuna_sweeper import STUDY_FILE, open_storage

    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return None
    settings = json.loads(path.read_text())
    if settings.get("storage") is None:
        log.warning("%s: the study was in memory; nothing to read", path)
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=settings["study_name"],
                             storage=open_storage(settings["storage"]))


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, job folder, state, value(s), duration, parameters."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": trial.number, "job": str(trial.number),
                               "state": trial.state.name}
        values = trial.values or ([trial.value] if trial.value is not None else [])
        if len(study.directions) == 1:
            row["value"] = values[0] if values else None
        else:
            row.update({f"value_{k}": v for k, v in enumerate(values)})
        row["duration_s"] = (round(trial.duration.total_seconds(), 1)
                             if trial.duration is not None else None)
        row.update({f"param:{k}": v for k, v in trial.params.items()})
        rows.append(row)
    return rows


def write_study_report(sweep_dir: str | Path, output: str | Path) -> tuple[dict[str, Path], str]:
    """Write the study's files into ``output``; return them by name and the Markdown section.

    Returns ``({}, "")`` when ``sweep_dir`` holds no Optuna study.
    """
    study = load_study(sweep_dir)
    if study is None:
        return {}, ""
    output = Path(output)
    rows = trial_rows(study)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    written = {"study.csv": write_csv(rows, output / "study.csv", columns)}
    if len(study.directions) == 1 and rows:
        written["optimization_history.png"] = plot_history(
            study, output / "optimization_history.png")
    importances = param_importances(study)
    if importances:
        written["param_importances.png"] = plot_importances(
            importances, output / "param_importances.png")
    return written, markdown_section(study, importances)


def param_importances(study: Any) -> dict[str, float]:
    """Each parameter's importance by PED-ANOVA (Watanabe et al. 2023, Optuna's evaluator:
    deterministic, and unlike fANOVA without scikit-learn), or ``{}`` when it cannot be told:
    a multi-objective study, fewer than three completed trials, or no parameter that varied."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(study.directions) != 1 or len(complete) < 3:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError) as error:
        log.info("no parameter importances: %s", error)
        return {}


def markdown_section(study: Any, importances: dict[str, float]) -> str:
    """Trials per state, the best trial(s) and the importances, as Markdown."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state.name == s for t in trials) for s in STATES}
    lines = [f"## Optuna study `{study.study_name}`", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()
                                                   if n) + ".", ""]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        lines += [f"Best: trial {best.number} (job folder `{best.number}`), value "
                  f"{best.value:.4g}, with " + ", ".join(f"`{k}={v}`" for k, v in
                                                        best.params.items()) + ".", ""]
    elif complete:
        lines += ["Pareto front: trials " + ", ".join(str(t.number) for t in study.best_trials)
                  + ".", ""]
    if importances:
        lines += ["Parameter importances (PED-ANOVA): " + ", ".join(
            f"`{k}` {v:.2f}" for k, v in importances.items()) + ".", ""]
    charts = ["`optimization_history.png`"] if len(study.directions) == 1 else []
    charts += ["`param_importances.png`"] if importances else []
    lines.append(("Charts: " + ", ".join(charts) + "; every" if charts else "Every")
                 + " trial: `study.csv`.")
    return "\n".join(lines)


def plot_history(study: Any, path: Path) -> Path:
    """Each finished trial's value against its number, the best so far as a step line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maximize = study.directions[0].name == "MAXIMIZE"
    fig, ax = plt.subplots(figsize=(7, 4))
    best, xs, ys = None, [], []
    for state, marker, colour in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:orange")):
        points = [(t.number, t.value) for t in study.get_trials(deepcopy=False)
                  if t.state.name == state and t.value is not None and math.isfinite(t.value)]
        if points:
            ax.scatter(*zip(*points), marker=marker, color=colour, label=state.lower(), zorder=3)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "COMPLETE" and trial.value is not None:
            if best is None or (trial.value > best if maximize else trial.value < best):
                best = trial.value
            xs.append(trial.number)
            ys.append(best)
    if xs:
        last = max(t.number for t in study.get_trials(deepcopy=False))
        ax.step([*xs, last], [*ys, ys[-1]], where="post", color="tab:red", label="best so far")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (" + ("higher" if maximize else "lower") + " is better)")
    ax.set_title(f"{study.study_name}: optimisation history")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_importances(importances: dict[str, float], path: Path) -> Path:
    """The importances as horizontal bars, most important on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
