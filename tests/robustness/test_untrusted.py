"""Untrusted checkpoints run nothing; predictions are written only under ``output``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from tests.inference.conftest import make_checkpoint, oblique_volume
from volseg.engine import SegmentationModule, TestPredictionWriter
from volseg.engine.checkpoint_loading import load_module
from volseg.engine.predict import predict_cases
from volseg.engine.trusted import UntrustedTargetError, check_targets
from volseg.io import write_volume
from volseg.io.safe_names import UnsafeNameError, output_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def _payloads(marker: Path) -> dict[str, dict]:
    """Configs that would create ``marker`` if anything built them."""
    return {
        "os.system": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        "subprocess.Popen": {"_target_": "subprocess.Popen", "_args_": [["touch", str(marker)]]},
        "builtins.eval": {"_target_": "builtins.eval",
                          "_args_": [f"open({str(marker)!r}, 'w')"]},
        # Allowed prefix, but Hydra's lookup walks on to os.system through an import of
        # volseg.io.atomic.
        "volseg.io.atomic.os.system": {"_target_": "volseg.io.atomic.os.system",
                                       "_args_": [f"touch {marker}"]},
        # An allowed module's function that writes any file it is told to.
        "volseg.io.atomic.write_json": {"_target_": "volseg.io.atomic.write_json", "data": 1,
                                     "path": str(marker)},
    }


def _tampered(checkpoint: Path, tmp_path: Path, key: str, config: dict) -> Path:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"][key] = config
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    return evil


@pytest.mark.parametrize("target", list(_payloads(Path("m"))))
@pytest.mark.parametrize("key", ["net", "loss", "optimizer"])
def test_a_checkpoint_naming_an_unlisted_target_is_refused_before_anything_runs(
    checkpoint, tmp_path, target, key
):
    marker = tmp_path / "pwned"
    evil = _tampered(checkpoint, tmp_path, key, _payloads(marker)[target])
    expected = f"^{evil}: refusing to build '{target}' at {key}: "
    with pytest.raises(UntrustedTargetError, match=expected):
        load_module(evil)
    # Also Lightning's own loading, pickle allowed: the module refuses in its constructor.
    with pytest.raises(UntrustedTargetError, match=f"refusing to build '{target}' at {key}"):
        SegmentationModule.load_from_checkpoint(evil, weights_only=False)
    write_volume(oblique_volume(), tmp_path / "in" / "a.nii.gz")
    with pytest.raises(UntrustedTargetError):
        predict_cases(evil, tmp_path / "in", tmp_path / "out", device="cpu")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_the_allow_list_refuses_functions_and_classes_defined_outside_it():
    with pytest.raises(UntrustedTargetError, match="only classes"):
        check_targets({"_target_": "torch.nn.functional.relu"})
    # Classes reached through an allowed module's imports, defined elsewhere.
    with pytest.raises(UntrustedTargetError, match="it is pathlib.Path, outside"):
        check_targets({"_target_": "volseg.io.atomic.Path"})
    with pytest.raises(UntrustedTargetError, match="it is torch.Tensor, outside"):
        check_targets({"_target_": "torch.nn.modules.module.torch.Tensor"})
    check_targets({"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau"})  # allowed
    check_targets({"_target_": "volseg.models.UNet3D"})


class _RunsCode:
    """Pickles as "call os.system" — what a malicious checkpoint hides in its pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_payload_is_refused_by_weights_only_loading(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["class_names"] = _RunsCode(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(state, evil)
    with pytest.raises(pickle.UnpicklingError,
                       match=f"^{evil}: refusing to load: it holds more than weights"):
        load_module(evil)
    assert not marker.exists()


def test_training_checkpoints_load_weights_only(checkpoint):
    module = load_module(checkpoint)  # weights_only=True inside
    assert module.class_names == ["background", "organ", "lesion"]


@pytest.mark.parametrize("case_id", ["../escape", "a/b", "/tmp/abs", "..", ".", "", ".hidden",
                                     "a\\b", "nul\0byte"])
def test_a_case_id_that_is_not_a_plain_file_name_is_refused(tmp_path, case_id):
    with pytest.raises(UnsafeNameError, match="is not a plain file name"):
        output_path(tmp_path, case_id)


def test_the_test_prediction_writer_writes_only_under_its_folder(tmp_path):
    writer = TestPredictionWriter(tmp_path / "run" / "predictions")
    volume = oblique_volume()
    outputs = {"case_id": "../../escape", "prediction": volume.array.astype("uint8"),
               "geometry": {"spacing": volume.spacing, "origin": volume.origin,
                            "direction": volume.direction}}
    with pytest.raises(UnsafeNameError):
        writer.on_test_batch_end(None, None, outputs, None, 0)  # type: ignore[arg-type]
    assert list(tmp_path.rglob("*.nii.gz")) == []
    writer.on_test_batch_end(None, None, {**outputs, "case_id": "case_7"}, None,  # type: ignore[arg-type]
                             0)
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.nii.gz")] == [
        Path("run/predictions/case_7.nii.gz")]


def test_predictions_from_a_list_with_dotdot_and_absolute_paths_stay_under_output(
    checkpoint, tmp_path
):
    write_volume(oblique_volume(), tmp_path / "data" / "sub" / "near.nii.gz")
    write_volume(oblique_volume(), tmp_path / "elsewhere" / "far.nii.gz")
    listing = tmp_path / "lists" / "cases.txt"
    listing.parent.mkdir()
    listing.write_text(f"../data/sub/../sub/near.nii.gz\n{tmp_path / 'elsewhere' / 'far.nii.gz'}\n")
    before = set(tmp_path.rglob("*"))
    summary = predict_cases(checkpoint, listing, tmp_path / "out", device="cpu")
    assert summary["failed"] == []
    created = sorted(p.relative_to(tmp_path) for p in set(tmp_path.rglob("*")) - before)
    assert created == [Path("out"), Path("out/far.nii.gz"), Path("out/near.nii.gz")]
