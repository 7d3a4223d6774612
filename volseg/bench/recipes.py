"""Training recipes compared on both built-in phantoms: test Dice, stability, wall time.

Each (phantom, recipe, seed) is one ``volseg train`` run in its own folder under ``--out``
(``<phantom>_<recipe>_s<seed>/``); a folder that already holds ``metrics.json`` is read, not
rerun, so an interrupted comparison resumes where it stopped. The table gives, per run, the test
Dice of every class (best checkpoint, the 6 held-out cases), the wall time, and the validation
curve's stability: after the first quarter of the epochs, the largest fall of the mean
validation Dice from one epoch to the next (``worst mean drop``) and of any one class
(``worst class drop``). A run is ``stable`` when those stay within 0.1 and 0.25.

Recipes are override lists on top of the shipped defaults, so ``default`` is whatever the
checkout ships and ``before_18`` pins what it shipped before (BatchNorm, checkpoints on raw
``val/dice``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from volseg.bench.machine import machine_description
from volseg.bench.report import rerun_command
from volseg.io.atomic import write_report
from volseg.runs import METRICS_JSON, load_run

PHANTOMS = {"synthetic": "data=synthetic", "synthetic_mri": "data=synthetic_mri"}
# Each recipe pins what differs from today's shipped defaults, so it reruns as it was measured.
# The first steps of issue 18 kept the phantoms' half of the patches on foreground and had no
# post-processing: `_FIRST` pins that. `++` sets the key whether or not a default has it.
_FIRST = ["++callbacks.postprocessing=null", "data.foreground_fraction=0.5"]
# Instance norm, checkpoints on the smoothed val/dice_ema, raw weights (no EMA): the base the
# single changes below are measured against (a later override of the same key wins).
_INSTANCE = ["model.norm=instance", "++callbacks.ema_weights=null", *_FIRST]
RECIPES: dict[str, list[str]] = {
    "default": [],
    "before_18": ["model.norm=batch", "callbacks.smoothed_metric=null",
                  "++callbacks.ema_weights=null", *_FIRST],
    "instance": [*_INSTANCE, "callbacks.smoothed_metric=null"],
    "instance_smoothed": _INSTANCE,
    "ema_weights": ["model.norm=instance", *_FIRST],  # + the moving average of the weights
    "sgd_poly": [*_INSTANCE, "optimizer=sgd", "scheduler=poly"],
    "poly": [*_INSTANCE, "scheduler=poly"],  # AdamW, the rate decaying to 0 at the last epoch
    "ema_poly": ["model.norm=instance", "scheduler=poly", *_FIRST],
    "deep_supervision": [*_INSTANCE, "model.deep_supervision=true", "loss=deep_supervision"],
    "warmup": [*_INSTANCE, "module.warmup_steps=50"],  # one default epoch of ramp
    # Foreground oversampling: nnU-Net's share, and none at all (every centre uniform).
    "foreground_0.33": [*_INSTANCE, "data.foreground_fraction=0.33"],
    "foreground_0": [*_INSTANCE, "data.foreground_fraction=0.0"],
    # Today's default (the moving average, post-processing, nnU-Net's third), spelt out.
    "default_foreground_0.33": ["model.norm=instance", "data.foreground_fraction=0.33"],
    "default_deep_supervision": ["model.deep_supervision=true", "loss=deep_supervision"],
    # The chosen foreground voxel anywhere in its patch rather than at its centre.
    "foreground_anywhere": ["data.foreground_position=anywhere"],
}
# What a phantom's config shipped with before issue 18, where it differs from today's: the CT
# phantom validated on one whole-volume tile (80x80x48), which only BatchNorm tolerates.
BEFORE_18 = {"synthetic": ["module.inference.tile_size=[80,80,48]"]}
MAX_MEAN_DROP, MAX_CLASS_DROP = 0.1, 0.25


def run_folder(out: Path, phantom: str, recipe: str, seed: int) -> Path:
    return out / f"{phantom}_{recipe}_s{seed}"


def train(folder: Path, phantom: str, recipe: str, seed: int, extra: Sequence[str]) -> None:
    """One ``volseg train`` run into ``folder`` (its stdout and stderr in ``train.out``)."""
    overrides = RECIPES[recipe] + (BEFORE_18.get(phantom, []) if recipe == "before_18" else [])
    command = [sys.executable, "-m", "volseg", "train", PHANTOMS[phantom], *overrides,
               f"seed={seed}", f"hydra.run.dir={folder}", "~callbacks.rich_progress_bar",
               "trainer.enable_progress_bar=false", *extra]
    folder.mkdir(parents=True, exist_ok=True)
    print(f"training {folder.name}: {' '.join(command[3:])}", flush=True)
    with open(folder / "train.out", "w") as output:
        done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{folder.name} failed (exit {done.returncode}); see "
                           f"{folder / 'train.out'}")


def curve_drops(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """The largest epoch-to-epoch fall of ``val/dice`` and of any ``val/dice_<class>`` after the
    first quarter of the epochs (a rise counts as 0)."""
    def value(row: Mapping[str, Any], key: str) -> float | None:
        text = row.get(key)
        return float(text) if text not in (None, "") else None

    rows = [r for r in rows if value(r, "val/dice") is not None]
    classes = [k for k in (rows[0] if rows else {}) if k.startswith("val/dice_")
               and k != "val/dice_ema" and "_region_" not in k]
    start = max(len(rows) // 4, 1)
    mean_drop = class_drop = 0.0
    for before, after in zip(rows[start - 1:], rows[start:]):
        mean_drop = max(mean_drop, value(before, "val/dice") - value(after, "val/dice"))
        for key in classes:
            if value(before, key) is not None and value(after, key) is not None:
                class_drop = max(class_drop, value(before, key) - value(after, key))
    return mean_drop, class_drop


def summarize(folder: Path) -> dict:
    """One run's figures, read from its ``metrics.json`` and ``history.json`` (`load_run`)."""
    run = load_run(folder)
    metrics = run.metrics
    mean_drop, class_drop = curve_drops(run.history)
    dice = {key.removeprefix("test/dice_"): value for key, value in metrics.items()
            if key.startswith("test/dice_") and "_region_" not in key}
    return {"dice": dice, "mean": metrics.get("test/dice"), "minutes": metrics["wall_time_s"] / 60,
            "epochs": metrics.get("epochs"), "mean_drop": mean_drop, "class_drop": class_drop}


def table(results: dict[tuple[str, str, int], dict]) -> str:
    """Markdown: one row per run, then one mean row per (phantom, recipe)."""
    lines = []
    for phantom in dict.fromkeys(key[0] for key in results):
        runs = {key: r for key, r in results.items() if key[0] == phantom}
        classes = list(next(iter(runs.values()))["dice"])
        lines += [f"\n**{phantom}**\n",
                  "| recipe | seed | " + " | ".join(f"Dice {c}" for c in classes)
                  + " | mean Dice | worst mean drop | worst class drop | stable | epochs "
                  "| minutes |",
                  "|---|---|" + "---:|" * (len(classes) + 3) + "---|---:|---:|"]
        for recipe in dict.fromkeys(key[1] for key in runs):
            rows = [(key[2], r) for key, r in runs.items() if key[1] == recipe]
            for seed, r in rows:
                lines.append(_row(recipe, str(seed), classes, r))
            if len(rows) > 1:
                lines.append(_row(f"**{recipe}**", "mean", classes, _mean([r for _, r in rows])))
    return "\n".join(lines).strip()


def _mean(runs: list[dict]) -> dict:
    def avg(values: list[float]) -> float:
        return sum(values) / len(values)

    return {"dice": {c: avg([r["dice"][c] for r in runs]) for c in runs[0]["dice"]},
            "mean": avg([r["mean"] for r in runs]), "minutes": avg([r["minutes"] for r in runs]),
            "epochs": avg([r["epochs"] for r in runs]),
            "mean_drop": max(r["mean_drop"] for r in runs),
            "class_drop": max(r["class_drop"] for r in runs)}


def _row(recipe: str, seed: str, classes: list[str], r: dict) -> str:
    stable = r["mean_drop"] <= MAX_MEAN_DROP and r["class_drop"] <= MAX_CLASS_DROP
    return (f"| {recipe} | {seed} | " + " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
            + f" | {r['mean']:.3f} | {r['mean_drop']:.3f} | {r['class_drop']:.3f} "
            f"| {'yes' if stable else 'NO'} | {r['epochs']:g} | {r['minutes']:.1f} |")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``recipes`` subcommand's options."""
    add = parser.add_argument
    add("--phantoms", nargs="+", default=list(PHANTOMS), choices=list(PHANTOMS))
    add("--recipes", nargs="+", default=["before_18", "default"], choices=list(RECIPES))
    add("--seeds", nargs="+", type=int, default=[12345, 1], help="training seeds")
    add("--out", default="outputs/bench/recipes", help="run folders (finished ones are reused)")
    add("--override", nargs="*", default=[], metavar="KEY=VALUE",
        help="extra overrides for every run, e.g. trainer.max_epochs=3")
    add("--existing", action="store_true",
        help="train nothing: table the finished runs among those asked for")
    add("--markdown", default=None, metavar="PATH",
        help="also write the table with a short header to PATH")


def run(args: argparse.Namespace) -> int:
    """Train what is missing, then print (and write) the table."""
    out = Path(args.out)
    results = {}
    start = time.perf_counter()
    for phantom in args.phantoms:
        for recipe in args.recipes:
            for seed in args.seeds:
                folder = run_folder(out, phantom, recipe, seed)
                if not (folder / METRICS_JSON).is_file():
                    if args.existing:
                        continue
                    train(folder, phantom, recipe, seed, args.override)
                results[phantom, recipe, seed] = summarize(folder)
    if not results:
        print(f"no finished runs under {out}")
        return 1
    header = (f"{machine_description('cpu')}\n"
              f"{time.perf_counter() - start:.0f} s of training in this call")
    text = table(results)
    print(f"{header}\n\n{text}")
    if args.markdown:
        options = ("phantoms", "recipes", "seeds", "out") + (("override",) if args.override
                                                               else ())
        command = rerun_command("recipes", args, options)
        explanation = __doc__.split("\n\n", 1)[1].strip()
        write_report(args.markdown, "Training recipes on both phantoms", command, header,
                     explanation, text)
    return 0
