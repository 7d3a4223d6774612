"""``volseg bench augment``: augmented training patches per second against MONAI and
TorchIO, on the same work in the same run.

One random volume (default 256x256x200, float32 image and a uint8 label, memory-mapped from
``.npy`` files as the case cache is) gives patches (default 128^3) with rotation, scaling,
elastic deformation, per-axis flips, gamma and Gaussian noise, every transform applied to every
patch (probability 1, flips 0.5 per axis), on ``--threads`` CPU threads (default 1, one loader
worker's share):

- volseg: `PatchSampler` with `volseg.data.augment`: the transforms compose into one sampling
  grid, read once from the bounding box of its source region in the volume.
- MONAI: dictionary transforms ``RandAffined``, ``Rand3DElasticd``, ``RandFlipd``,
  ``RandAdjustContrastd`` (gamma), ``RandGaussianNoised``, then ``RandSpatialCropd``.
- TorchIO: ``RandomAffine``, ``RandomElasticDeformation``, ``RandomFlip``, ``RandomGamma``,
  ``RandomNoise`` on a ``Subject``, then a random crop (TorchIO's queue crops after the
  transforms).

MONAI and TorchIO transform the whole volume before cropping, which is how they give a patch
real context at its borders (volseg's does too); cropping first would make their borders
padding. ``--device cuda`` adds volseg's ``augment_device: gpu`` path: a batch of plain crops
augmented on the device (patches/s including the host-to-device copy).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from volseg.bench.machine import machine_description
from volseg.bench.report import comma_ints
from volseg.io.atomic import write_report

if TYPE_CHECKING:
    from volseg.data.augment import Augmentation

ROTATION_DEG = 15.0
SCALE_RANGE = (0.85, 1.25)
GAMMA_RANGE = (0.7, 1.5)
NOISE_STD = 0.1
ELASTIC_SPACING = 32  # voxels between control points (Çiçek 2016)
ELASTIC_SIGMA = 4.0   # voxels
ELASTIC_MAX = 10.0    # voxels


@dataclass
class AugmentResult:
    """One table row: ``patches`` patches in ``seconds``; ``error`` when the library failed."""

    name: str
    patches: int = 0
    seconds: float = 0.0
    error: str = ""

    @property
    def per_second(self) -> float:
        return self.patches / self.seconds if self.seconds else 0.0


def write_volume(
    folder: Path, shape: Sequence[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``(1, *shape)`` image and ``shape`` label (three classes), memory-mapped."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (1, *shape)).astype(np.float32)
    label = np.zeros(tuple(shape), np.uint8)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    for value, radius in ((1, 0.3), (2, 0.1)):
        centre = [s * rng.uniform(0.35, 0.65) for s in shape]
        inside = sum(((g - c) / (radius * s)) ** 2 for g, c, s in zip(grid, centre, shape)) <= 1
        label[inside] = value
        image[0][inside] += value
    np.save(folder / "image.npy", image)
    np.save(folder / "label.npy", label)
    return (np.load(folder / "image.npy", mmap_mode="r"),
            np.load(folder / "label.npy", mmap_mode="r"))


def bench_augmentation() -> Augmentation:
    """volseg's settings for the benchmark's work: every transform with probability 1."""
    from volseg.data.augment import Augmentation, IntensityAugment, SpatialAugment

    off = {f"{name}_prob": 0.0 for name in ("blur", "brightness", "contrast", "lowres")}
    return Augmentation(
        SpatialAugment(flip_prob=0.5, rotation_prob=1.0, rotation_deg=(ROTATION_DEG,) * 3,
                       scale_prob=1.0, scale_range=SCALE_RANGE, elastic_prob=1.0,
                       elastic_sigma=ELASTIC_SIGMA, elastic_max=ELASTIC_MAX,
                       elastic_spacing=ELASTIC_SPACING),
        IntensityAugment(noise_prob=1.0, noise_std=(NOISE_STD, NOISE_STD), gamma_prob=1.0,
                         gamma_range=GAMMA_RANGE, **off),
    )


def volseg_sampler(patch: Sequence[int], volume: Sequence[int]) -> Callable:
    """volseg's patch function: `PatchSampler` with `bench_augmentation`."""
    from volseg.data.sampling import PatchSampler

    sampler = PatchSampler(patch, foreground_fraction=0.33, augmentation=bench_augmentation())
    return lambda image, label, rng: sampler.sample(image, label, {}, rng)


def monai_sampler(patch: Sequence[int], volume: Sequence[int]) -> Callable:
    """MONAI dictionary transforms doing the same work, then a random crop."""
    from monai.transforms import (
        Compose,
        Rand3DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandSpatialCropd,
    )

    keys, modes = ["image", "label"], ("bilinear", "nearest")
    angle = math.radians(ROTATION_DEG)
    low, high = SCALE_RANGE
    transforms = Compose([
        RandAffined(keys, prob=1.0, rotate_range=(angle,) * 3,
                    scale_range=((low - 1, high - 1),) * 3, mode=modes, padding_mode="zeros"),
        # MONAI's elastic: a dense random field smoothed with a Gaussian (sigma in voxels),
        # scaled by the magnitude; values from MONAI's 3D tutorials.
        Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(100, 200), prob=1.0,
                       mode=modes, padding_mode="zeros"),
        *[RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)],
        RandAdjustContrastd(["image"], prob=1.0, gamma=GAMMA_RANGE),
        RandGaussianNoised(["image"], prob=1.0, std=NOISE_STD),
        RandSpatialCropd(keys, roi_size=tuple(patch), random_size=False),
    ])

    def sample(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple:
        transforms.set_random_state(int(rng.integers(2**31)))
        out = transforms({"image": torch.from_numpy(np.array(image)),
                          "label": torch.from_numpy(np.array(label))[None]})
        return out["image"], out["label"]

    return sample


def torchio_sampler(patch: Sequence[int], volume: Sequence[int]) -> Callable:
    """TorchIO transforms doing the same work, then a random crop."""
    import torchio as tio

    # TorchIO spreads its control points over the whole volume: as many as keep them
    # ELASTIC_SPACING voxels apart (at least the 5 it needs).
    control_points = max(5, math.ceil(max(volume) / ELASTIC_SPACING) + 1)
    transforms = tio.Compose([
        tio.RandomAffine(scales=SCALE_RANGE, degrees=ROTATION_DEG, isotropic=True,
                         default_pad_value=0),
        # Displacements up to ELASTIC_MAX per axis (mm = voxels here), as volseg's bound.
        tio.RandomElasticDeformation(num_control_points=control_points,
                                     max_displacement=ELASTIC_MAX),
        tio.RandomFlip(axes=(0, 1, 2), flip_probability=0.5),
        tio.RandomGamma(log_gamma=tuple(math.log(g) for g in GAMMA_RANGE)),
        tio.RandomNoise(std=(NOISE_STD, NOISE_STD)),
    ])

    def sample(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple:
        torch.manual_seed(int(rng.integers(2**31)))
        subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(np.array(image))),
                              label=tio.LabelMap(tensor=torch.from_numpy(np.array(label))[None]))
        out = transforms(subject)
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(out.spatial_shape, patch)]
        box = tuple(slice(s, s + p) for s, p in zip(start, patch))
        return out["image"].data[(slice(None), *box)], out["label"].data[(slice(None), *box)]

    return sample


# name -> make(patch, volume shape) -> sample(image, label, rng) -> (image patch, label patch)
SAMPLERS: dict[str, Callable[[Sequence[int], Sequence[int]], Callable]] = {
    "volseg": volseg_sampler, "MONAI": monai_sampler, "TorchIO": torchio_sampler,
}


def measure(name: str, make: Callable, image: np.ndarray, label: np.ndarray,
            patch: Sequence[int], repeats: int, seed: int = 0) -> AugmentResult:
    """Patches per second of one library: one warm-up patch, then ``repeats`` timed ones."""
    try:
        sample = make(patch, label.shape)
        rng = np.random.default_rng(seed)
        out = sample(image, label, rng)  # warm-up: imports, caches, first allocations
        if tuple(out[0].shape[-3:]) != tuple(patch):
            raise ValueError(f"made a {tuple(out[0].shape)} patch")
        start = time.perf_counter()
        for _ in range(repeats):
            sample(image, label, rng)
        return AugmentResult(name, repeats, time.perf_counter() - start)
    except Exception as error:  # a missing or broken library is a row, not a crash
        return AugmentResult(name, error=f"{type(error).__name__}: {error}")


def measure_batched(image: np.ndarray, label: np.ndarray, patch: Sequence[int], repeats: int,
                    batch_size: int, device: str) -> AugmentResult:
    """volseg's ``augment_device: gpu`` path: plain crops, batch augmented on ``device``."""
    from volseg.data.augment import BatchAugmentation
    from volseg.data.sampling import PatchSampler

    sampler = PatchSampler(patch, foreground_fraction=0.33, flip_prob=0.0)
    augment = BatchAugmentation(bench_augmentation())
    rng = np.random.default_rng(0)

    def one_batch() -> None:
        patches = [sampler.sample(image, label, {}, rng) for _ in range(batch_size)]
        batch = {"image": torch.from_numpy(np.stack([p[0] for p in patches])).to(device),
                 "label": torch.from_numpy(np.stack([p[1] for p in patches])).to(device)}
        augment(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    one_batch()
    start = time.perf_counter()
    for _ in range(repeats):
        one_batch()
    return AugmentResult(f"volseg, batch of {batch_size} on {device}", repeats * batch_size,
                         time.perf_counter() - start)


def format_table(results: Sequence[AugmentResult]) -> str:
    """The results as a Markdown table, each row's speed against the faster library's."""
    reference = max((r.per_second for r in results
                     if not r.error and r.name in ("MONAI", "TorchIO")), default=0.0)
    lines = ["| library | patches | seconds | patches/s | vs faster of MONAI/TorchIO |",
             "|---|---:|---:|---:|---:|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | — | — | — | failed: {r.error[:80]} |")
            continue
        ratio = f"{r.per_second / reference:.1f}x" if reference else "—"
        lines.append(f"| {r.name} | {r.patches} | {r.seconds:.2f} | {r.per_second:.2f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``augment`` subcommand's options."""
    parser.add_argument("--volume", type=comma_ints, default=[256, 256, 200],
                        help="volume size x,y,z in voxels (default 256,256,200)")
    parser.add_argument("--patch", type=comma_ints, default=[128, 128, 128],
                        help="patch size x,y,z in voxels (default 128,128,128)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed volseg patches (default 10)")
    parser.add_argument("--library-repeats", type=int, default=3,
                        help="timed MONAI and TorchIO patches, seconds each (default 3)")
    parser.add_argument("--libraries", default="volseg,MONAI,TorchIO",
                        help="comma-separated rows to measure (default all three)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one loader worker's share)")
    parser.add_argument("--device", default=None,
                        help="also time the augment_device: gpu path on this device "
                             "(cuda, or cpu to check it)")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="patches per batch on --device (default 2)")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Run the ``augment`` benchmark from parsed arguments; print (and write) the table."""
    if len(args.volume) != 3 or len(args.patch) != 3 or any(
            p > v for p, v in zip(args.patch, args.volume)):
        print("error: --volume and --patch need three sizes, the patch inside the volume",
              file=sys.stderr)
        return 2
    names = [n.strip() for n in args.libraries.split(",") if n.strip()]
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        print(f"error: unknown --libraries {unknown}; choose from {list(SAMPLERS)}",
              file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        image, label = write_volume(Path(folder), args.volume)
        for name in names:
            repeats = args.repeats if name == "volseg" else args.library_repeats
            print(f"{name}: {repeats} patches ...", file=sys.stderr, flush=True)
            results.append(measure(name, SAMPLERS[name], image, label, args.patch, repeats))
        if args.device:
            results.append(measure_batched(image, label, args.patch, args.repeats,
                                           args.batch_size, args.device))
        del image, label  # close the memory maps before the folder goes
    torch.set_num_threads(threads)  # a caller (the tests) keeps its own setting
    machine = machine_description(args.device or "cpu", args.threads)
    table = format_table(results)
    print(f"{machine}\n\n{table}")
    if args.markdown:
        volume, patch = "x".join(map(str, args.volume)), "x".join(map(str, args.patch))
        write_report(
            args.markdown, "Augmented patches per second: volseg, MONAI, TorchIO",
            "volseg bench augment " + " ".join(sys.argv[2:]), machine,
            f"{patch} patches from a {volume} memory-mapped volume, each with rotation "
            f"(+-{ROTATION_DEG:g} deg), scaling ({SCALE_RANGE[0]}-{SCALE_RANGE[1]}), elastic "
            "deformation, flips (0.5 per axis), gamma and Gaussian noise; one warm-up patch, "
            "then the timed ones. MONAI and TorchIO transform the whole volume, then crop "
            "(borders with real context, as volseg's single grid gives).",
            table,
        )
    return 0 if all(not r.error for r in results if r.name == "volseg") else 1
