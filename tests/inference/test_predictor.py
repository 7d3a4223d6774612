"""predict: geometry round trip, inputs, failures, CLI."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.inference.conftest import oblique_volume
from volseg.inference.predictor import find_inputs, predict_cases
from volseg.io import write_volume

REPO = Path(__file__).resolve().parents[2]


def test_prediction_has_the_input_geometry_exactly(checkpoint, tmp_path):
    """Odd shape, anisotropic spacing, oblique direction: checked with nibabel, not SimpleITK."""
    source = write_volume(oblique_volume((23, 17, 9)), tmp_path / "in" / "patient7.nii.gz")
    summary = predict_cases(checkpoint, source, tmp_path / "out", device="cpu")
    assert summary["failed"] == []
    written, original = nib.load(tmp_path / "out" / "patient7.nii.gz"), nib.load(source)
    assert written.shape == original.shape == (23, 17, 9)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    assert written.get_data_dtype() == np.uint8


def test_folder_with_metaimage_and_channels(checkpoint, tmp_path):
    volume = oblique_volume((12, 12, 6))
    write_volume(volume, tmp_path / "in" / "a.mha")
    write_volume(volume, tmp_path / "in" / "b_0000.nii.gz")
    cases = find_inputs(tmp_path / "in")
    assert [(c.case_id, len(c.paths)) for c in cases] == [("a", 1), ("b", 1)]
    summary = predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert summary["failed"] == []


def test_bad_case_is_reported_and_the_rest_predicted(checkpoint, tmp_path):
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "good.nii.gz")
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not a volume")
    two = oblique_volume((12, 12, 6))
    write_volume(two, tmp_path / "in" / "two_0000.nii.gz")
    write_volume(two, tmp_path / "in" / "two_0001.nii.gz")
    summary = predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    failed = dict(summary["failed"])
    assert set(failed) == {"broken", "two"}
    assert "broken.nii.gz: unreadable" in failed["broken"]
    assert "2 channel(s), the model expects 1" in failed["two"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.nii.gz"]


def test_output_inside_input_is_refused(checkpoint, tmp_path):
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "a.nii.gz")
    with pytest.raises(ValueError, match="inside the input folder"):
        predict_cases(checkpoint, tmp_path / "in", tmp_path / "in" / "pred", device="cpu")


def test_untrusted_checkpoint_is_refused(checkpoint, tmp_path):
    import torch

    state = torch.load(checkpoint, weights_only=False)
    state["hyper_parameters"]["net"] = {"_target_": "os.system", "command": "echo pwned"}
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "a.nii.gz")
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        predict_cases(evil, tmp_path / "in", tmp_path / "out", device="cpu")


@pytest.mark.slow
def test_cli_writes_predictions_and_exits_nonzero_on_failure(checkpoint, tmp_path):
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "a.nii.gz")
    command = [sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}",
               f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
               f"paths.log_dir={tmp_path / 'logs'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "a.nii.gz").is_file()
    (tmp_path / "in" / "b.nii.gz").write_bytes(b"")
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED b" in done.stdout + done.stderr


def test_in_place_softmax_and_slab_argmax_match_torch():
    import torch

    from volseg.inference.predictor import class_argmax, softmax_

    logits = torch.randn(2, 5, 37, 6, 4, generator=torch.Generator().manual_seed(0)) * 30
    expected = torch.softmax(logits, dim=1)
    result = softmax_(logits)
    assert result.data_ptr() == logits.data_ptr()  # no second class map was allocated
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-7)
    labels = class_argmax(expected[0], slab=5)  # 37 slices: the last slab is partial
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), expected[0].argmax(0))
