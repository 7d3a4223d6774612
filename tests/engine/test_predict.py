"""`volseg.engine.predict`: geometry round trip, inputs, failures, outputs never replaced, CLI."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.inference.conftest import oblique_volume
from volseg.engine.predict import predict_cases
from volseg.inference.inputs import find_inputs
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
    # Into the same folder again: overwrite=true (test_an_output_is_never_replaced_silently
    # shows the refusal without it).
    done = subprocess.run([*command, "overwrite=true"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED b" in done.stdout + done.stderr
    # A bad prediction option: exit 2 before any work, the option named in one line.
    done = subprocess.run([*command, "output=never", "predictor.precision=fp8"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "predictor: precision must be one of ['32', 'bf16', '16'], got 'fp8'" in (
        done.stdout + done.stderr)
    assert not (tmp_path / "never").exists()


def test_in_place_softmax_and_slab_argmax_match_torch():
    import torch

    from volseg.data.preprocess import class_argmax
    from volseg.inference.predictor import softmax_

    logits = torch.randn(2, 5, 37, 6, 4, generator=torch.Generator().manual_seed(0)) * 30
    expected = torch.softmax(logits, dim=1)
    result = softmax_(logits)
    assert result.data_ptr() == logits.data_ptr()  # no second class map was allocated
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-7)
    labels = class_argmax(expected[0], slab=5)  # 37 slices: the last slab is partial
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), expected[0].argmax(0))


# --- dataset trees: a folder of them, or a data config's split ---------------------------------

# layout -> (its data config, the class names a model trained on it has)
LAYOUTS = {
    "kits23": ("kits23", ["background", "kidney", "tumor"]),
    "luna16": ("luna16", ["background", "nodule"]),
    "hipmri": ("hipmri", ["background", "body", "bone", "bladder", "rectum", "prostate"]),
    "nnunet": ("decathlon", ["background", "organ", "lesion"]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_tree_and_a_data_split_give_one_output_per_case_on_its_grid(layout, tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config
    from tests.data.adapters import trees
    from tests.inference.conftest import make_checkpoint
    from volseg.inference.inputs import dataset_cases
    from volseg.io import read_volume

    config, classes = LAYOUTS[layout]
    tree = tmp_path / layout
    ids = getattr(trees, f"make_{layout}")(tree)
    checkpoint = make_checkpoint(tmp_path / "model.ckpt", class_names=classes)
    datamodule = instantiate(compose_config(
        "train", tmp_path, [f"data={config}", f"data.root={tree}", "data.cache_workers=0"]).data)
    images = {case.case_id: datamodule.layout.read_image(case) for case in datamodule.cases()}

    by_folder = predict_cases(checkpoint, tree, tmp_path / "folder", device="cpu")
    assert by_folder["failed"] == []
    cases = dataset_cases(datamodule, "all")
    by_split = predict_cases(checkpoint, cases, tmp_path / "split", device="cpu")
    assert by_split["failed"] == [] and all(case.label_reader for case in cases)
    for out in ("folder", "split"):
        written = {p.name.removesuffix(".nii.gz") for p in (tmp_path / out).iterdir()}
        assert written == set(ids)
        for case_id in ids:
            label = read_volume(tmp_path / out / f"{case_id}.nii.gz")
            assert label.geometry_mismatch(images[case_id], tolerance=1e-5) is None
            assert label.array.dtype == np.uint8 and label.array.max() < len(classes)
    # Scored against the tree (its layout recognised), every case, no failure; class 1's Dice
    # of the first case checked against SimpleITK.
    import SimpleITK as sitk

    from volseg.evaluation import evaluate

    report = evaluate(tmp_path / "folder", tree, tmp_path / "eval", class_names=classes)
    assert report["failed"] == [] and sorted(c["case"] for c in report["cases"]) == sorted(ids)
    first = sorted(report["cases"], key=lambda c: c["case"])[0]
    reference = {c.case_id: datamodule.layout.read_label(c) for c in datamodule.cases()}[
        first["case"]]
    prediction = read_volume(tmp_path / "folder" / f"{first['case']}.nii.gz")
    p, r = (reference.with_array((v.array == 1).astype(np.uint8)).to_sitk()
            for v in (prediction, reference))
    measures = sitk.LabelOverlapMeasuresImageFilter()
    measures.Execute(r, p)
    expected = measures.GetDiceCoefficient(1) if (prediction.array == 1).any() or (
        reference.array == 1).any() else None
    assert first["metrics"]["dice"][classes[1]] == (
        None if expected is None else pytest.approx(expected, abs=1e-6))
    # The validation split (KiTS23's config has no test split): the cases splits.json gives
    # it, written, and nothing else.
    val_cases = dataset_cases(datamodule, "val")
    val_ids = set(datamodule.split["val"])
    assert val_ids and val_ids < set(ids)
    predict_cases(checkpoint, val_cases, tmp_path / "val", device="cpu")
    assert {p.name.removesuffix(".nii.gz") for p in (tmp_path / "val").iterdir()} == val_ids


def test_an_output_is_never_replaced_silently(checkpoint, tmp_path):
    write_volume(oblique_volume((12, 12, 6)), tmp_path / "in" / "a.nii.gz")
    predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    before = (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"already holds .*a.nii.gz: set overwrite=true"):
        predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu")
    assert (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns == before
    predict_cases(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu", overwrite=True)
    assert (tmp_path / "out" / "a.nii.gz").stat().st_mtime_ns != before


def test_an_empty_split_is_named(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config
    from tests.data.adapters import trees
    from volseg.inference.inputs import dataset_cases

    trees.make_kits23(tmp_path / "kits23")
    cfg = compose_config("train", tmp_path, ["experiment=resnet18_unet_kits23",
                                             f"data.root={tmp_path / 'kits23'}"])
    with pytest.raises(ValueError, match=r"split=test: .*splits.json has no test cases "
                                         r"\(data.split.test=0"):
        dataset_cases(instantiate(cfg.data), "test")
