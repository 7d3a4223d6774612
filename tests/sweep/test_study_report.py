"""A sweep's Optuna study read back: every trial, the best one, the charts, the importances."""

import csv
import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from volseg.sweep.optuna_sweeper import STUDY_FILE
from volseg.sweep.study_report import load_study, write_study_report

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "loss": CategoricalDistribution(
    ("dice", "ce"))}


def _sweep(tmp_path, values):
    """A sweep folder whose study holds one trial per entry: a value, "pruned" or "fail"."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="train", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for value in values:
        trial = study.ask(SPACE)
        if value == "pruned":
            trial.report(0.1, step=0)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif value == "fail":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    (tmp_path / STUDY_FILE).write_text(json.dumps({"storage": storage, "study_name": "train"}))
    return study


def test_every_trial_the_best_and_the_charts(tmp_path):
    study = _sweep(tmp_path, [0.5, 0.8, "pruned", "fail", 0.6])
    written, section = write_study_report(tmp_path, tmp_path / "out")
    with (tmp_path / "out" / "study.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["trial"], r["state"]) for r in rows] == [
        ("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "PRUNED"), ("3", "FAIL"), ("4", "COMPLETE")]
    assert [r["value"] for r in rows] == ["0.5", "0.8", "0.1", "", "0.6"]  # pruned: last value
    assert rows[0]["param:loss"] == study.trials[0].params["loss"]
    assert "5 trials: 3 complete, 1 pruned, 1 fail." in section
    assert "Best: trial 1 (job folder `1`), value 0.8" in section
    assert written["optimization_history.png"].stat().st_size > 1000
    # Three completed trials: the importances of both parameters, summing to one.
    assert "Parameter importances (PED-ANOVA): " in section
    assert written["param_importances.png"].is_file()


def test_too_few_trials_give_no_importances_and_other_sweeps_no_study(tmp_path):
    _sweep(tmp_path, [0.5, "fail"])
    written, section = write_study_report(tmp_path, tmp_path)
    assert "param_importances.png" not in written and "importances" not in section
    (tmp_path / "plain").mkdir()
    assert load_study(tmp_path / "plain") is None
    assert write_study_report(tmp_path / "plain", tmp_path / "plain") == ({}, "")


def test_importances_match_optunas_own(tmp_path):
    study = _sweep(tmp_path, [0.1, 0.9, 0.2, 0.8, 0.3])
    _, section = write_study_report(tmp_path, tmp_path)
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert sum(expected.values()) == pytest.approx(1.0)
    for name, value in expected.items():
        assert f"`{name}` {value:.2f}" in section
