"""``volseg bench train``: the training loop's speed, and what the data pipeline costs it.

The run is composed as ``volseg train`` composes it (``train.yaml`` and ``--override``s: data,
model, loss, optimizer, precision), and its module is built the same way. Lightning's
``Trainer`` then runs ``--steps`` optimizer steps twice, validation off:

- **real loader**: the data config's train loader (reading the cache, sampling, augmenting in
  its workers; with ``data.augment_device=gpu`` the batch is augmented on the device after the
  transfer, as in training);
- **ready-made**: the same module and trainer fed one batch from that loader, already on the
  device, over and over: no loading, no augmentation, no transfer.

A callback times each step: *data wait* is the time from the end of one step to the start of
the next (fetching the batch, moving it to the device, device-side augmentation), *compute* the
step itself (forward, loss, backward, optimizer; synchronised on a GPU). The first ``--warmup``
steps are left out. *loader overhead* is how much longer a real step takes than a ready-made
one.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from volseg.bench.machine import machine_description
from volseg.bench.report import rerun_command
from volseg.io.atomic import write_report


@dataclass
class LoopTiming:
    """Seconds per measured step, split into waiting for data and computing."""

    name: str
    steps: int
    wait_s: float
    compute_s: float

    @property
    def step_s(self) -> float:
        return (self.wait_s + self.compute_s) / self.steps

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / (self.wait_s + self.compute_s)


def _timer(device: str, warmup: int):  # noqa: ANN202 - a Lightning callback, built lazily
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        """Wall time between steps (data) and within them (compute), after ``warmup`` steps."""

        def __init__(self) -> None:
            self.wait = self.compute = 0.0
            self.steps = 0
            self._end: float | None = None
            self._start = 0.0

        def _now(self) -> float:
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            self._start = self._now()
            if self._end is not None and batch_idx >= warmup:
                self.wait += self._start - self._end

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self._end = self._now()
            if batch_idx >= warmup:
                self.compute += self._end - self._start
                self.steps += 1

    return StepTimer()


def _trainer(device: str, precision: str, steps: int, timer: object):  # noqa: ANN202
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer])


def benchmark_train(
    overrides: Sequence[str], steps: int, warmup: int, device: str, precision: str
) -> list[LoopTiming]:
    """Time ``steps`` training steps with the real loader and with a ready-made batch."""
    from hydra.utils import instantiate

    from volseg.engine.train import build_module
    from volseg.runs.compose import compose_config

    # ReduceLROnPlateau waits for a validation score these runs never compute; the learning
    # rate's schedule does not change a step's time.
    if not any(o.split("=", 1)[0] == "scheduler" for o in overrides):
        overrides = ["scheduler=none", *overrides]
    cfg = compose_config(list(overrides))

    total = warmup + steps
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data, samples_per_epoch=total * cfg.data.batch_size)
    datamodule.prepare_data()  # generates a built-in phantom on first use, as training does
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    target = torch.device("cuda" if device == "cuda" else "cpu")
    ready = {k: v.to(target) if torch.is_tensor(v) else v for k, v in batch.items()}
    feeds = {"ready-made batch": {"train_dataloaders": torch.utils.data.DataLoader(
                 [ready] * total, batch_size=None, shuffle=False)},
             "real loader": {"datamodule": datamodule}}
    results = []
    # The process's first fit runs slower for dozens of steps (allocator, oneDNN's primitive
    # cache): an unmeasured fit first, so the two measured ones start equally warm.
    for name, feed in [("warm-up", feeds["ready-made batch"]), *feeds.items()]:
        module = build_module(cfg, datamodule)
        timer = _timer(device, warmup)
        _trainer(device, precision, total, timer).fit(module, **feed)
        if name != "warm-up":
            results.append(LoopTiming(name, timer.steps, timer.wait, timer.compute))
    return results


def format_table(results: Sequence[LoopTiming]) -> str:
    """A Markdown table, the ready-made batch as the reference for the overhead."""
    reference = next(r for r in results if r.name == "ready-made batch").step_s
    lines = ["| feed | steps | steps/s | s/step | data wait | compute s/step | loader overhead |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        overhead = r.step_s / reference - 1
        lines.append(f"| {r.name} | {r.steps} | {1 / r.step_s:.2f} | {r.step_s:.3f} | "
                     f"{r.wait_fraction:.1%} | {r.compute_s / r.steps:.3f} | {overhead:+.1%} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=30, help="measured steps per feed")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32",
                        help='Lightning precision: "32", "bf16-mixed" (autocast), "16-mixed"')
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a `volseg train` override (repeatable), e.g. data=synthetic_mri, "
                             "data.num_workers=2, data.augment_device=gpu")
    parser.add_argument("--markdown", help="also write the report to this Markdown file")


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` benchmark from parsed arguments; print (and write) the table."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.steps < 1 or args.warmup < 0:
        print("error: --steps must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    results = benchmark_train(args.override, args.steps, args.warmup, args.device,
                              args.precision)
    machine = machine_description(args.device, torch.get_num_threads())
    setting = f"precision {args.precision}; overrides: {' '.join(args.override) or 'none'}"
    table = format_table(results)
    print(f"{machine}\n{setting}\n\n{table}")
    if args.markdown:
        command = rerun_command("train", args, ("steps", "warmup", "device", "precision"),
                                repeated=("override",))
        write_report(args.markdown, "Training-loop benchmark", command,
                     f"{machine}\n\n{setting}", __doc__.split("\n\n", 1)[1], table)
    return 0
