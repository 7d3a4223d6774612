"""``volseg bench infer``: volseg's sliding window against MONAI's, and a fast mode.

Every row runs in a fresh Python process (so peak RSS is that mode's alone) on the same
network (MONAI's BasicUNet with seeded weights), the same seeded volume, the same tile,
overlap and Gaussian weighting (sigma 1/8 of the tile). ``seconds`` is the fastest
whole-volume call (``--rounds`` processes per mode, run in turn, x ``--repeats`` calls each),
after one warm-up forward on a tile; ``peak RSS`` is the process's maximum resident memory
(interpreter and libraries included, so ratios understate differences in the stitching).
``max abs dp`` is the largest difference of softmax probabilities from MONAI's. The fast mode
uses a larger tile (twice the tile, at most the volume), the channels-last memory layout and,
on CUDA, bf16 autocast; its ``Dice vs volseg`` is the mean foreground Dice between its argmax
and the equal-settings volseg argmax.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from volseg.bench.machine import machine_description
from volseg.bench.report import rerun_command
from volseg.io.atomic import write_report

MODES = ("monai", "volseg", "fast")
NUM_CLASSES = 3


def _network(features: int, device: torch.device) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    widths = (features, features, 2 * features, 4 * features, 8 * features, features)
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES,
                     features=widths).eval().to(device)


def _volume(size: Sequence[int], device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    image = torch.randn((1, 1, *size), generator=generator)
    # Smooth it a little so the untrained network sees structure larger than one voxel.
    image = torch.nn.functional.avg_pool3d(image, 5, stride=1, padding=2) * 5
    return image.to(device)


def run_mode(mode: str, size: Sequence[int], tile: Sequence[int], features: int,
             device: str, out: Path, repeats: int = 1) -> dict:
    """Run one mode in this process; save its probabilities to ``out``; return its numbers."""
    torch_device = torch.device(device)
    net, image = _network(features, torch_device), _volume(size, torch_device)
    tile = list(tile)
    layout = torch.contiguous_format
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=False)
    if mode == "fast":
        tile = [min(2 * t, s) for t, s in zip(tile, size)]
        layout = torch.channels_last_3d
        net = net.to(memory_format=layout)
        image = image.contiguous(memory_format=layout)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=torch_device.type == "cuda")
    if mode == "monai":
        from monai.inferers import sliding_window_inference as infer

        def call() -> torch.Tensor:
            return infer(image, tile, 1, net, overlap=0.5, mode="gaussian", sigma_scale=0.125)
    else:
        from volseg.inference import sliding_window_inference as infer

        def call() -> torch.Tensor:
            return infer(net, image, tile, overlap=0.5, mode="gaussian", sigma_scale=0.125)

    with torch.inference_mode(), autocast:
        net(torch.zeros((1, 1, *tile), device=torch_device).contiguous(memory_format=layout))
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            logits = call()
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = min(times)  # the least disturbed run: the CPU may be shared
        probabilities = torch.softmax(logits.float(), 1)[0].cpu().numpy()
    np.save(out, probabilities)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": seconds, "peak_rss_mb": peak_mb, "tile": tile}


def _in_subprocess(mode: str, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "volseg.bench.infer", "--worker", mode,
               "--size", *map(str, args.size), "--tile", *map(str, args.tile),
               "--features", str(args.features), "--device", args.device,
               "--repeats", str(args.repeats), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either label map."""
    scores = []
    for cls in range(1, NUM_CLASSES):
        x, y = a == cls, b == cls
        if x.any() or y.any():
            scores.append(2 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(scores)) if scores else 1.0


def benchmark(args: argparse.Namespace) -> str:
    """Run every mode in its own process and return the Markdown table."""
    with tempfile.TemporaryDirectory() as folder:
        rows, probs = {}, {}
        # Rounds interleave the modes, so a burst of other load on a shared CPU slows one
        # round of every mode rather than all of one mode; the fastest round counts.
        for _ in range(args.rounds):
            for mode in MODES:
                out = Path(folder) / f"{mode}.npy"
                row = _in_subprocess(mode, args, out)
                probs[mode] = np.load(out)
                if mode not in rows or row["seconds"] < rows[mode]["seconds"]:
                    rows[mode] = row
    base = rows["monai"]
    labels = {m: p.argmax(0) for m, p in probs.items()}
    lines = ["| mode | tile | seconds | time ÷ MONAI | peak RSS (MiB) | RSS ÷ MONAI "
             "| max abs dp vs MONAI | Dice vs volseg |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        r = rows[mode]
        diff = float(np.abs(probs[mode] - probs["monai"]).max())
        dice = "" if mode == "monai" else f"{_dice(labels[mode], labels['volseg']):.4f}"
        lines.append(
            f"| {mode} | {'x'.join(map(str, r['tile']))} | {r['seconds']:.2f} "
            f"| {r['seconds'] / base['seconds']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {diff:.1e} | {dice} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``infer`` subcommand's options."""
    add = parser.add_argument
    add("--size", type=int, nargs=3, default=[128, 128, 96],
        help="volume, voxels (default 128 128 96: minutes on a 2-core CPU)")
    add("--tile", type=int, nargs=3, default=[64, 64, 64], help="tile, voxels (default 64^3)")
    add("--features", type=int, default=16,
        help="BasicUNet width: features of the first level (default 16; MONAI's is 32)")
    add("--device", default="cpu", help="cpu or cuda (default cpu)")
    add("--repeats", type=int, default=1,
        help="timed calls per mode in each process, fastest kept (default 1)")
    add("--rounds", type=int, default=2,
        help="fresh processes per mode, run in turn; fastest kept (default 2)")
    add("--markdown", default=None, metavar="PATH",
        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Run the ``infer`` benchmark from parsed arguments; print (and write) the table."""
    table = benchmark(args)
    size, tile = "x".join(map(str, args.size)), "x".join(map(str, args.tile))
    header = (f"{machine_description(args.device)}\nvolume {size}, tile {tile}, overlap 0.5, "
              f"Gaussian, BasicUNet features {args.features}, batch 1, {args.device}, fastest of "
              f"{args.rounds} round(s) x {args.repeats} call(s), each after a warm-up")
    print(f"{header}\n\n{table}")
    if args.markdown:
        command = rerun_command("infer", args, ("size", "tile", "features", "device",
                                                 "repeats", "rounds"))
        explanation = __doc__.split("\n\n", 1)[1].strip()
        write_report(args.markdown, "Sliding-window inference benchmark", command, header,
                     explanation, table)
    return 0


def _worker(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=MODES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(json.dumps(run_mode(args.worker, args.size, args.tile, args.features, args.device,
                              args.out, args.repeats)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
