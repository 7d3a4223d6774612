"""A run folder read back: one reader of metrics.json for `load_run` and `volseg report`."""

import json

import pytest

from volseg.report import load_runs
from volseg.runs import load_run, read_metrics


def test_metrics_of_a_finished_an_unfinished_and_a_damaged_run(tmp_path):
    assert read_metrics(tmp_path) == {}  # unfinished: no metrics.json yet
    (tmp_path / "metrics.json").write_text(json.dumps({"val/dice": 0.5}))
    assert read_metrics(tmp_path) == {"val/dice": 0.5}
    (tmp_path / "metrics.json").write_text('{"val/dice": 0.')
    damaged = read_metrics(tmp_path)
    assert damaged["status"] == "failed"
    assert damaged["error"].startswith("unreadable metrics.json: ")


def test_load_run_and_the_leaderboard_read_a_damaged_run_alike(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "metrics.json").write_text("not json")
    run = load_run(tmp_path)
    assert run.metrics["status"] == "failed" and run.history == [] and run.checkpoint is None
    (row,) = load_runs(tmp_path)
    assert row["status"] == "failed" and row["error"] == run.metrics["error"]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such run folder"):
        load_run(tmp_path / "nowhere")
