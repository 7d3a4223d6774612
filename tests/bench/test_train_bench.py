"""`volseg bench train`: the real loader against a ready-made batch, in the real training loop."""

import pytest
import torch

from tests.conftest import FAST
from volseg.bench.__main__ import main
from volseg.bench.train import LoopTiming, format_table


def test_overhead_and_wait_worked_by_hand():
    ready = LoopTiming("ready-made batch", steps=10, wait_s=0.0, compute_s=5.0)  # 0.5 s/step
    real = LoopTiming("real loader", steps=10, wait_s=1.0, compute_s=5.0)  # 0.6 s/step
    assert real.step_s == pytest.approx(0.6) and real.wait_fraction == pytest.approx(1 / 6)
    table = format_table([ready, real])
    assert "| real loader | 10 | 1.67 | 0.600 | 16.7% | 0.500 | +20.0% |" in table
    assert "| ready-made batch | 10 | 2.00 | 0.500 | 0.0% | 0.500 | +0.0% |" in table


@pytest.mark.slow
def test_tiny_run_times_both_feeds(tmp_path, shared_data_dir, capsys):
    small = [o for o in FAST if o.startswith(("data.layout", "data.patch_size", "model."))]
    markdown = tmp_path / "train.md"
    status = main(["train", "--steps", "3", "--warmup", "1", "--markdown", str(markdown),
                   *(f"--override={o}" for o in [*small, f"paths.data_dir={shared_data_dir}",
                                                 f"paths.root_dir={tmp_path}"])])
    out = capsys.readouterr().out
    assert status == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines()
            if line.startswith(("| real loader |", "| ready-made batch |"))}
    assert set(rows) == {"real loader", "ready-made batch"}
    for cells in rows.values():
        assert cells[1] == "3" and float(cells[2]) > 0
        assert 0 <= float(cells[4].rstrip("%")) < 100
    assert rows["ready-made batch"][6] == "+0.0%"
    assert "threads" in out and "precision 32" in out
    assert "| real loader |" in markdown.read_text()


def test_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert main(["train", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_with_device_augmentation(tmp_path, shared_data_dir, capsys):
    small = [o for o in FAST if o.startswith(("data.layout", "data.patch_size", "model."))]
    assert main(["train", "--steps", "3", "--warmup", "1", "--device", "cuda", "--precision",
                 "bf16-mixed", *(f"--override={o}" for o in [
                     *small, "data.augment_device=gpu", f"paths.data_dir={shared_data_dir}",
                     f"paths.root_dir={tmp_path}"])]) == 0
    assert "| real loader | 3 |" in capsys.readouterr().out
