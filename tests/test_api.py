"""The Python API on one short real run: `volseg.train(overrides=...)` makes the run folder the
CLI would, with TensorBoard scalars, overlays and hparams, the training history, the resolved
config; `load_run`, `load_runs` and `predict` read and use it."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import volseg
from tests.conftest import CONF_DIR, FAST

pytestmark = pytest.mark.slow

OVERRIDES = [*FAST, "callbacks.image_logger.every_n_epochs=1", "callbacks.image_logger.max_cases=2"]


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, shared_data_dir) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("api")
    metrics = volseg.train(overrides=[*OVERRIDES, f"paths.root_dir={root}",
                                      f"paths.data_dir={shared_data_dir}"])
    return metrics, root


def event_files(run_dir: Path) -> list[EventAccumulator]:
    accumulators = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def test_run_folder_is_where_the_cli_puts_it(api_run):
    metrics, root = api_run
    run_dir = Path(metrics["run_dir"])
    assert run_dir.parent == root / "outputs" / "train" / "runs"
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == {k: v for k, v in metrics.items() if k != "run_dir"}
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "callbacks.image_logger.every_n_epochs=1" in overrides
    resolved = (run_dir / "config.yaml").read_text()
    assert "${" not in resolved
    config = yaml.safe_load(resolved)
    assert config["paths"]["output_dir"] == str(run_dir)
    assert config["model"]["features"] == 4


def test_tensorboard_has_scalars_overlays_and_hparams(api_run):
    metrics, _ = api_run
    scalars, images, hparams = set(), set(), set()
    for events in event_files(Path(metrics["run_dir"])):
        tags = events.Tags()
        scalars |= set(tags["scalars"])
        images |= set(tags["images"])
        with contextlib.suppress(KeyError):  # a file without an hparams record
            hparams |= set(events.PluginTagToContent("hparams"))
    assert {"train/loss_epoch", "val/loss", "val/dice", "val/dice_organ", "val/dice_lesion",
            "val/hd95_organ", "lr-AdamW", "hparams/val/dice", "hparams/test/dice"} <= scalars
    assert images and all(tag.startswith("val/overlay/synth_") for tag in images)
    assert "_hparams_/session_start_info" in hparams


def test_history_matches_the_logged_numbers(api_run):
    metrics, _ = api_run
    run = volseg.load_run(metrics["run_dir"])
    assert [row["epoch"] for row in run.history] == [0, 1]
    fit_events = event_files(run.path)[0]  # the first file: written while fitting
    for tag in ("train/loss_epoch", "val/dice", "val/loss"):
        logged = [s.value for s in fit_events.Scalars(tag)]
        assert [row[tag] for row in run.history] == pytest.approx(logged, rel=1e-6), tag
    assert all(row["lr"] > 0 for row in run.history)
    png = (run.path / "training_history.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 600 and height >= 300


def test_load_run_and_load_runs(api_run):
    metrics, root = api_run
    run = volseg.load_run(metrics["run_dir"])
    assert run.metrics["val/dice"] == metrics["val/dice"]
    assert run.config.trainer.max_epochs == 2
    assert run.checkpoint is not None and run.checkpoint.is_file()
    (row,) = volseg.load_runs(root / "outputs" / "train" / "runs")
    assert row["status"] == "completed"
    assert row["val/dice"] == metrics["val/dice"]


def test_predict_with_the_run_checkpoint(api_run, shared_data_dir, tmp_path):
    metrics, _ = api_run
    image = sorted((shared_data_dir / "synthetic" / "imagesTr").glob("*_0000.nii.gz"))[0]
    summary = volseg.predict(metrics["best_model_path"], image, tmp_path / "pred", device="cpu")
    assert summary["failed"] == [] and len(summary["written"]) == 1
    assert summary["class_names"] == ["background", "organ", "lesion"]


def test_a_failed_run_leaves_its_record(tmp_path, shared_data_dir):
    run_dir = tmp_path / "failed"
    with pytest.raises(Exception, match="module.regions"):
        volseg.train(overrides=[*FAST, f"paths.root_dir={tmp_path}",
                                f"paths.data_dir={shared_data_dir}", "module.regions={kidney:[7]}"],
                     output_dir=run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "module.regions" in record["error"]


def test_train_takes_a_config_or_overrides_not_both(tmp_path):
    from tests.conftest import compose_config

    cfg = compose_config("train", tmp_path, FAST)
    with pytest.raises(ValueError, match="not both"):
        volseg.train(cfg, overrides=["trainer.max_epochs=1"])


def test_default_callbacks_include_the_monitoring_ones():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["test=false"])
    assert cfg.callbacks.image_logger.every_n_epochs >= 1
    assert cfg.callbacks.hparams_logger.wait_for_test is False  # follows `test`
    assert "training_history" in cfg.callbacks
