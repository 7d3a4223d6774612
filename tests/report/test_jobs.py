"""`volseg.report.jobs`: job folders read into rows, named by their configuration."""

from __future__ import annotations

import pytest

from volseg.report import (
    configuration_labels,
    find_job_dirs,
    load_runs,
)


def test_load_runs_reads_every_job(sweep):
    runs = {r["job"]: r for r in load_runs(sweep)}
    assert list(runs) == ["0", "1", "2", "3", "10"]  # job-number order, not "10" before "2"
    assert runs["0"]["configuration"] == "model=unet3d loss=dice"
    assert runs["0"]["status"] == "completed"
    assert runs["0"]["val/dice"] == pytest.approx(0.8)
    assert runs["0"]["parameters"] == 1000
    assert runs["0"]["fold"] is None
    assert runs["2"]["status"] == "failed"
    assert runs["2"]["error"] == "RuntimeError: out of memory"
    assert runs["3"]["status"] == "missing"
    assert "val/dice" not in runs["3"]
    assert runs["10"]["val/dice"] is None


def test_a_run_folder_and_several_folders(sweep, kfold_sweep):
    (single,) = load_runs(sweep / "1")
    assert single["job"] == "1"
    assert single["configuration"] == "(common overrides)"
    both = load_runs(sweep, kfold_sweep)
    assert len(both) == 11
    assert both[0]["job"] == f"multiruns/{sweep.name}/0"
    assert both[5]["job"] == "kfold/0"


def test_configuration_is_the_overrides_that_differ():
    labels = configuration_labels([
        ["a=1", "model=unet3d", "data.fold=0"],
        ["a=1", "model=unet3d", "data.fold=1"],
        ["a=1", "model=res2unet3d", "+extra=2", "data.fold=0"],
    ])
    assert labels == ["model=unet3d", "model=unet3d", "model=res2unet3d +extra=2"]
    assert configuration_labels([[]]) == ["(defaults)"]


def test_find_job_dirs_names_the_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_job_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_job_dirs(tmp_path / "absent")
