"""train.py from the command line, as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tmp_path, shared_data_dir):
    command = [sys.executable, str(REPO / "train.py"), "debug=fdr", *FAST,
               f"paths.root_dir={tmp_path}", f"paths.data_dir={shared_data_dir}"]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for run in runs:
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output[-3000:]
    folders = sorted((tmp_path / "outputs" / "debug" / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "metrics.json").is_file()
        assert (folder / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_misspelled_key_exits_with_hydra_error(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "data.bach_size=4"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert "Could not override 'data.bach_size'" in done.stderr


@pytest.mark.slow
def test_predict_cli_takes_list_options(tmp_path):
    """Hydra list values (an ensemble, TTA axes, classes) reach predict_cases as plain lists."""
    from tests.inference.conftest import make_checkpoint
    from tests.inference.test_inputs import _volume
    from volseg.io import write_volume

    folds = [make_checkpoint(tmp_path / f"fold{i}.ckpt", seed=i) for i in range(2)]
    write_volume(_volume(), tmp_path / "in" / "a.nii.gz")
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path=[{folds[0]},{folds[1]}]",
         f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "tta_axes=[0,2]",
         "save_probabilities=true", "keep_largest_component=[1]", "device=cpu",
         f"paths.log_dir={tmp_path / 'logs'}"],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.nii.gz", "a_probabilities.nii.gz"]
