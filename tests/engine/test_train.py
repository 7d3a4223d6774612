"""A short real training run on the synthetic dataset, end to end."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import volseg
from volseg.engine import SegmentationModule


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_data_dir):
    from tests.conftest import FAST, compose_config

    tmp_path = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", tmp_path, FAST, data_dir=shared_data_dir)
    metrics = volseg.train(cfg)
    return cfg, metrics, tmp_path / "run"


pytestmark = pytest.mark.slow


def test_run_writes_metrics_json(finished_run):
    cfg, metrics, run_dir = finished_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    for stage in ("val", "test"):
        for name in ("loss", "dice", "dice_organ", "dice_lesion"):
            assert f"{stage}/{name}" in saved
    assert 0.0 <= saved["test/dice_organ"] <= 1.0
    assert saved["epochs"] == cfg.trainer.max_epochs


def test_run_writes_best_and_last_checkpoints(finished_run):
    _, metrics, run_dir = finished_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert metrics["best_model_path"].startswith(str(run_dir / "checkpoints" / "epoch_"))


def test_tensorboard_has_the_logged_scalars(finished_run):
    _, _, run_dir = finished_run
    tags = set()
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss_epoch", "val/loss", "val/dice", "val/dice_lesion", "lr-AdamW"} <= tags


def test_test_predictions_have_the_original_geometry(finished_run, shared_data_dir):
    _, _, run_dir = finished_run
    split = json.loads((shared_data_dir / "synthetic" / "splits.json").read_text())
    written = sorted(p.name for p in (run_dir / "predictions").glob("*.nii.gz"))
    assert written == sorted(f"{case}.nii.gz" for case in split["test"])
    for name in written:
        prediction = nib.load(run_dir / "predictions" / name)
        source = nib.load(shared_data_dir / "synthetic" / "imagesTr" /
                          name.replace(".nii.gz", "_0000.nii.gz"))
        assert prediction.shape == source.shape
        np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


def test_test_predictions_are_what_volseg_predict_writes(finished_run, tmp_path):
    """`test_step` and `volseg predict` make labels by one path: the same files, voxel for voxel."""
    from hydra.utils import instantiate

    from volseg.engine.predict import predict_cases
    from volseg.inference.inputs import dataset_cases

    cfg, metrics, run_dir = finished_run
    cases = dataset_cases(instantiate(cfg.data), "test")
    summary = predict_cases(metrics["best_model_path"], cases, tmp_path / "predicted",
                            device="cpu")
    assert summary["failed"] == [] and len(summary["written"]) == len(cases) > 0
    for path in map(Path, summary["written"]):
        np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj),
                                      np.asarray(nib.load(run_dir / "predictions" /
                                                          path.name).dataobj), path.name)


def test_checkpoint_alone_rebuilds_the_model(finished_run):
    _, metrics, _ = finished_run
    module = SegmentationModule.load_from_checkpoint(metrics["best_model_path"],
                                                     map_location="cpu").eval()
    assert module.class_names == ["background", "organ", "lesion"]
    assert module.preprocessor.spacing == [2.0, 2.0, 2.5]
    assert module.preprocessor.window == [-160.0, 240.0]
    state = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=False)
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, state["state_dict"][name])


def test_evaluating_a_checkpoint_reproduces_its_metrics(finished_run, tmp_path,
                                                        shared_data_dir):
    from tests.conftest import FAST, compose_config

    _, metrics, _ = finished_run
    cfg = compose_config("train", tmp_path, [*FAST, "train=false",
                                             f"ckpt_path={metrics['best_model_path']}"],
                         data_dir=shared_data_dir)
    again = volseg.train(cfg)
    for name in ("val/dice_organ", "val/dice_lesion", "test/dice_organ", "test/loss"):
        assert again[name] == pytest.approx(metrics[name], abs=1e-6)


def test_validation_chooses_a_postprocessing_that_test_applies(finished_run, tmp_path,
                                                              shared_data_dir):
    from scipy import ndimage

    from tests.conftest import FAST, compose_config

    _, metrics, _ = finished_run
    assert 0.0 <= metrics["val/dice_postprocessed"] <= 1.0
    state = torch.load(metrics["best_model_path"], map_location="cpu", weights_only=False)
    assert set(state["postprocessing"]) == {"largest_foreground", "largest_component",
                                            "connectivity"}
    # Whatever this short run chose, a checkpoint that says "largest foreground component"
    # is tested that way: every written prediction has one foreground component at most.
    state["postprocessing"] = {"largest_foreground": True, "largest_component": [],
                               "connectivity": 26}
    edited = tmp_path / "edited.ckpt"
    torch.save(state, edited)
    cfg = compose_config("train", tmp_path, [*FAST, "train=false", f"ckpt_path={edited}",
                                             "callbacks.postprocessing=null"],
                         data_dir=shared_data_dir)
    volseg.train(cfg)
    written = sorted((tmp_path / "run" / "predictions").glob("*.nii.gz"))
    assert written
    for path in written:
        labels = np.asarray(nib.load(path).dataobj)
        assert ndimage.label(labels > 0, np.ones((3, 3, 3)))[1] <= 1, path.name


def test_bf16_mixed_precision_with_clipping_and_accumulation(train_config):
    cfg = train_config("debug=fdr", "trainer.precision=bf16-mixed",
                       "trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=2")
    metrics = volseg.train(cfg)
    assert np.isfinite(metrics["val/loss"])


def test_simulated_sparse_annotation_trains_end_to_end(tmp_path, shared_data_dir):
    from tests.conftest import FAST, compose_config

    overrides = [*FAST, "trainer.max_epochs=1", "data.ignore_index=255",
                 "data.sparse_annotation={slices_per_axis:2,seed:0}", "loss=sparse_ce",
                 "module.surface_metrics=false"]
    cfg = compose_config("train", tmp_path, overrides, data_dir=shared_data_dir)
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    labels = next(iter(datamodule.train_dataloader()))["label"]
    # Two slices per axis of a 32x32x16 patch are labelled, the rest is ignored.
    assert 0.3 < (labels == 255).float().mean() < 0.95
    assert set(labels.unique().tolist()) - {255} <= {0, 1, 2}
    metrics = volseg.train(cfg)
    assert 0.0 <= metrics["test/dice"] <= 1.0


def test_sparse_annotation_without_ignore_index_is_refused(tmp_path, shared_data_dir):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from tests.conftest import FAST, compose_config

    cfg = compose_config("train", tmp_path, [*FAST, "data.sparse_annotation={slices_per_axis:2}"],
                         data_dir=shared_data_dir)
    # Hydra wraps the constructor's ValueError; its message names the key.
    with pytest.raises(InstantiationException, match="data.ignore_index"):
        instantiate(cfg.data)


class CountValidationRounds(pl.Callback):
    """Appends the trainer's stage (``fit``, ``validate``) to ``path`` at each validation round."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            with self.path.open("a") as file:
                file.write(f"{trainer.state.fn.value}\n")


def _counted_run(tmp_path: Path, data_dir: Path, *overrides: str) -> tuple[dict, list[str]]:
    from tests.conftest import FAST, compose_config

    rounds = tmp_path / "rounds.txt"
    counter = (f"+callbacks.count={{_target_: {__name__}.CountValidationRounds, "
               f"path: '{rounds}'}}")
    cfg = compose_config("train", tmp_path, [*FAST, counter, *overrides], data_dir=data_dir)
    metrics = volseg.train(cfg)
    return metrics, rounds.read_text().split()


def test_a_best_checkpoint_from_the_last_round_is_not_validated_again(tmp_path,
                                                                      shared_data_dir):
    metrics, rounds = _counted_run(tmp_path / "trained", shared_data_dir,
                                   "trainer.max_epochs=1")
    assert rounds == ["fit"]
    again, _ = _counted_run(tmp_path / "again", shared_data_dir, "train=false",
                            f"ckpt_path={metrics['best_model_path']}")
    validated = {k: v for k, v in again.items() if k.startswith("val/")}
    # The same keys (no smoothed value) and the same numbers as validating it again.
    assert {k: v for k, v in metrics.items() if k.startswith("val/")} == pytest.approx(validated)


def test_a_best_checkpoint_from_an_earlier_round_is_validated_again(tmp_path, shared_data_dir):
    # Monitoring the step with mode=min keeps the first round's checkpoint as the best.
    metrics, rounds = _counted_run(tmp_path, shared_data_dir, "trainer.max_epochs=2",
                                   "callbacks.model_checkpoint.monitor=step",
                                   "callbacks.model_checkpoint.mode=min")
    assert rounds == ["fit", "fit", "validate"]
    assert metrics["best_model_path"].endswith("epoch_000.ckpt")
