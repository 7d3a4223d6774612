"""``volseg bench predict``: the whole ``volseg predict`` on one large CT, time and memory.

A CT of ``--size`` voxels (default 512x512x400, a typical abdominal scan) at ``--spacing`` is
written as int16 NIfTI, and a checkpoint is saved whose preprocessing resamples to
``--model-spacing`` and whose network (a narrow, untrained 3D U-Net: the stitching, not the
network, is what this measures) predicts ``--classes`` classes with ``--tile`` tiles at
``--overlap``. ``volseg predict`` then runs in a fresh process, reading, preprocessing,
sliding-window inference, resampling the probabilities back and writing the label map, and the
table reports its wall time and peak resident memory (the child process's maximum RSS), and
checks that the written label map has the input's exact grid. The machine has no swap, so a
peak RSS below its memory is a run that did not swap.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from volseg.bench.machine import machine_description
from volseg.bench.report import rerun_command
from volseg.io import Volume
from volseg.io.atomic import write_report


def write_ct(path: Path, size: Sequence[int], spacing: Sequence[float]) -> sitk.Image:
    """Write an int16 CT-like volume (air around a soft-tissue body with a bright ellipsoid,
    noise) and return it."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in size)
    # (z, y, x) order for SimpleITK; built slab by slab to keep this script's own memory small.
    array = np.empty(tuple(size)[::-1], dtype=np.int16)
    rng = np.random.default_rng(0)
    body = (x[None, :] ** 2 + y[:, None] ** 2) < 0.8  # the same in every slice
    for k, zk in enumerate(z):
        organ = ((x[None, :] - 0.3) ** 2 + (y[:, None] / 0.6) ** 2 + zk**2) < 0.1
        slab = np.where(body, 40.0, -1000.0) + np.where(organ, 120.0, 0.0)
        array[k] = (slab + rng.normal(0, 20, slab.shape)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin((-180.0, -200.0, -600.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    return image


def write_checkpoint(path: Path, classes: int, model_spacing: Sequence[float],
                     tile: Sequence[int], overlap: float) -> None:
    """Save an untrained, narrow `SegmentationModule` as ``train.py`` would."""
    import pytorch_lightning as pl

    from volseg.engine import SegmentationModule

    pl.seed_everything(0, verbose=False)
    module = SegmentationModule(
        net={"_target_": "volseg.models.UNet3D", "in_channels": 1, "out_channels": classes,
             "features": 2, "num_levels": 2},
        loss={"_target_": "volseg.losses.DiceCELoss"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True}, scheduler=None,
        class_names=["background", *(f"class{c}" for c in range(1, classes))],
        preprocessing={"spacing": list(model_spacing), "intensity": "ct_window",
                       "window": [-1000.0, 400.0]},
        inference={"tile_size": list(tile), "overlap": overlap},
    )
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


def benchmark(args: argparse.Namespace) -> str:
    """Run ``volseg predict`` once on the fabricated CT and return the Markdown table."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "in").mkdir()
        ct, ckpt = folder / "in" / "ct_0000.nii.gz", folder / "model.ckpt"
        ct_image = write_ct(ct, args.size, args.spacing)
        write_checkpoint(ckpt, args.classes, args.model_spacing, args.tile, args.overlap)
        command = [sys.executable, "-m", "volseg", "predict", f"ckpt_path={ckpt}",
                   f"input={folder / 'in'}", f"output={folder / 'out'}", "device=cpu",
                   f"paths.log_dir={folder / 'logs'}"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"volseg predict failed:\n{done.stderr[-3000:]}")
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        label = sitk.ReadImage(str(folder / "out" / "ct.nii.gz"))
        grid = Volume.from_sitk(ct_image).geometry_mismatch(Volume.from_sitk(label),
                                                            tolerance=1e-6) is None
        labels = sitk.GetArrayViewFromImage(label)
        dtype, values = labels.dtype, np.unique(labels).tolist()
    voxels = int(np.prod(args.size))
    return "\n".join([
        "| input | voxels | classes | seconds | peak RSS (GiB) | bytes per voxel "
        "| label dtype | label values | same grid as input |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
        f"| {'x'.join(map(str, args.size))} | {voxels / 1e6:.1f} M | {args.classes} "
        f"| {seconds:.0f} | {peak_gib:.2f} | {peak_gib * 1024**3 / voxels:.0f} | {dtype} "
        f"| {values} | {'yes' if grid else 'NO'} |",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's options."""
    add = parser.add_argument
    add("--size", type=int, nargs=3, default=[512, 512, 400], help="CT voxels (x y z)")
    add("--spacing", type=float, nargs=3, default=[0.7, 0.7, 1.25], help="CT spacing, mm")
    add("--model-spacing", type=float, nargs=3, default=[0.78, 0.78, 1.0],
        help="the checkpoint's preprocessing spacing, mm (default KiTS-like 0.78 0.78 1.0)")
    add("--classes", type=int, default=4, help="classes, background included (default 4)")
    add("--tile", type=int, nargs=3, default=[128, 128, 128], help="tile, voxels")
    add("--overlap", type=float, default=0.5, help="tile overlap (default 0.5)")
    add("--markdown", default=None, metavar="PATH",
        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Run the ``predict`` benchmark from parsed arguments; print (and write) the table."""
    table = benchmark(args)
    settings = (f"CT {'x'.join(map(str, args.size))} at {args.spacing} mm, model spacing "
                f"{args.model_spacing} mm, {args.classes} classes, tile "
                f"{'x'.join(map(str, args.tile))}, overlap {args.overlap}, cpu")
    header = f"{machine_description('cpu')}\n{settings}"
    print(f"{header}\n\n{table}")
    if args.markdown:
        command = rerun_command("predict", args, ("size", "spacing", "model_spacing",
                                                   "classes", "tile", "overlap"))
        explanation = __doc__.split("\n\n", 1)[1].strip()
        write_report(args.markdown, "Predicting a large CT: time and memory", command, header,
                     explanation, table)
    return 0
