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
def test_predict_cli_scores_against_labels(tmp_path):
    """`labels=` scores only the written label maps (not the probability maps beside them)."""
    import json

    from tests.inference.conftest import make_checkpoint
    from tests.inference.test_inputs import _volume
    from volseg.io import write_volume

    checkpoint = make_checkpoint(tmp_path / "model.ckpt", seed=0)
    write_volume(_volume(), tmp_path / "in" / "a.nii.gz")
    command = [sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}",
               f"input={tmp_path / 'in'}", "predictor.save_probabilities=true", "device=cpu",
               f"paths.log_dir={tmp_path / 'logs'}"]
    first = subprocess.run([*command, f"output={tmp_path / 'first'}"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # The reference: the first prediction, with a block set to class 1.
    from volseg.io import read_volume

    predicted = read_volume(tmp_path / "first" / "a.nii.gz")
    reference = predicted.with_array(predicted.array.copy())
    reference.array[:3, :3, :3] = 1
    write_volume(reference, tmp_path / "refs" / "a.nii.gz")
    p, r = predicted.array == 1, reference.array == 1
    expected = 2 * (p & r).sum() / (p.sum() + r.sum())
    second = subprocess.run([*command, f"output={tmp_path / 'second'}",
                             f"labels={tmp_path / 'refs'}"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    report = json.loads((tmp_path / "second" / "evaluation" / "evaluation.json").read_text())
    assert [c["case"] for c in report["cases"]] == ["a"] and report["failed"] == []
    # The same model on the same input: Dice of class 1 by hand from the two files.
    class_1 = list(report["cases"][0]["metrics"]["dice"].values())[0]
    assert class_1 == pytest.approx(expected, abs=1e-6)
