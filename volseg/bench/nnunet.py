"""``volseg bench nnunet``: volseg's complete plan against nnU-Net v2 itself, on the same data.

On a dataset in nnU-Net's raw layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``; the
built-in CT phantom by default) both tools get the same cases: volseg's split (its
``splits.json``: train, validation, test). nnU-Net sees the train and validation cases as its
``imagesTr`` with that split as its fold 0 (``splits_final.json``) and the test cases as
``imagesTs``. Then, each tool with its defaults:

- **nnU-Net**: ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (its default planner, with
  ``--gpu-memory-gb`` as ``-gpu_memory_target``), its default trainer with only the budget
  changed (``num_epochs``, ``num_iterations_per_epoch``, and its validation iterations scaled
  as its 250:50 default), and ``nnUNetv2_predict`` (mirroring test-time augmentation, step 0.5);
- **volseg**: ``volseg plan`` with the same memory budget, ``volseg train plan=<file>`` for the
  same number of optimizer steps (``--budget steps``) or for nnU-Net's training wall time
  (``--budget time``), and ``volseg predict`` (its default inference).

Both tools' predictions are scored by one evaluator (`volseg.evaluation.evaluate`) against the
test labels. Wall times are of each tool's own commands, as a user runs them; peak RSS is the
largest resident set of any process a command started (``RUSAGE_CHILDREN``). nnU-Net runs from
the Python environment ``--python`` names (the ``[peer]`` extra installs nnunetv2; its own
environment avoids its torch pin), volseg from this one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from volseg.bench.machine import machine_description
from volseg.bench.report import rerun_command
from volseg.io.atomic import write_report
from volseg.runs import METRICS_JSON

DATASET_ID = 987
# nnU-Net's default trainer: 250 training and 50 validation iterations per epoch.
NNUNET_VAL_SHARE = 50 / 250
# Run as a fresh process: nnU-Net's default trainer with the budget changed. It keeps the
# default trainer's class name, so the checkpoint names it and `nnUNetv2_predict` rebuilds the
# network as for any default run; nothing else differs.
NNUNET_TRAIN = textwrap.dedent("""
    import json, os, sys, torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as default
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    epochs, iterations, val_iterations, device = (int(sys.argv[1]), int(sys.argv[2]),
                                                  int(sys.argv[3]), sys.argv[4])

    class nnUNetTrainer(default.nnUNetTrainer):
        # nnU-Net records its constructor's arguments by name: the same signature
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = val_iterations

    if device == "cpu":  # as nnUNetv2_train does on a CPU
        torch.set_num_threads(os.cpu_count())
    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(int(sys.argv[5])))
    plans = load_json(join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False  # as nnUNetv2_train's get_trainer_from_args sets it
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, load_json(join(folder, "dataset.json")),
                            device=torch.device(device))
    trainer.run_training()
""")


@dataclass
class ToolResult:
    """One tool's run: settings, times (s), peak RSS (MB) and scores per class."""

    tool: str
    budget: str
    steps: int | None = None
    plan_s: float = 0.0
    train_s: float = 0.0
    predict_s: float = 0.0
    train_peak_mb: float = 0.0
    predict_peak_mb: float = 0.0
    dice: dict[str, float] = field(default_factory=dict)
    hd95: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        return sum(self.dice.values()) / max(len(self.dice), 1)


def measured(command: Sequence[str], env: Mapping[str, str] | None = None,
             log: Path | None = None) -> tuple[float, float]:
    """Run ``command``; return its wall time (s) and the largest RSS (MB) of its processes.

    A wrapper process runs it, so ``RUSAGE_CHILDREN`` covers this command alone.

    Raises:
        RuntimeError: the command failed (the tail of its output is in the message).
    """
    wrapper = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print('VOLSEG_PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
               " file=sys.stderr); sys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *command], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        where = f"; its output is in {log}" if log is not None else ""
        raise RuntimeError(f"{Path(command[0]).name} {command[-1]} failed with status "
                           f"{done.returncode}{where}:\n{(done.stdout + done.stderr)[-2000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith("VOLSEG_PEAK_KB"))
    return seconds, peak / 1024


def nnunet_raw_dataset(source: Path, split: Mapping[str, Sequence[str]], raw: Path) -> Path:
    """nnU-Net's raw folder ``Dataset<ID>_volseg`` under ``raw``, built from links to ``source``.

    ``imagesTr``/``labelsTr`` hold the split's train and validation cases, ``imagesTs`` the
    test images; ``labelsTs`` the test labels (for scoring only).

    Raises:
        FileNotFoundError: ``source`` is not in nnU-Net's raw layout or lacks a case's file.
    """
    meta_file = source / "dataset.json"
    if not meta_file.is_file() or not (source / "imagesTr").is_dir():
        raise FileNotFoundError(f"{source}: not in nnU-Net's raw layout (dataset.json, "
                                "imagesTr/, labelsTr/)")
    meta = json.loads(meta_file.read_text())
    ending = meta.get("file_ending", ".nii.gz")
    channels = len(meta["channel_names"])
    target = raw / f"Dataset{DATASET_ID:03d}_volseg"
    if target.exists():
        shutil.rmtree(target)
    trained = [*split["train"], *split["val"]]
    for folder, cases in (("Tr", trained), ("Ts", split["test"])):
        for case in cases:
            for channel in range(channels):
                name = f"{case}_{channel:04d}{ending}"
                _link(source / "imagesTr" / name, target / f"images{folder}" / name)
            _link(source / "labelsTr" / f"{case}{ending}",
                  target / f"labels{folder}" / f"{case}{ending}")
    (target / "dataset.json").write_text(json.dumps({**meta, "numTraining": len(trained)}))
    return target


def _link(source: Path, link: Path) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"{source}: missing")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source.resolve())


def write_nnunet_split(preprocessed: Path, split: Mapping[str, Sequence[str]]) -> Path:
    """volseg's train/validation split as nnU-Net's fold 0 (``splits_final.json``)."""
    path = preprocessed / f"Dataset{DATASET_ID:03d}_volseg" / "splits_final.json"
    path.write_text(json.dumps([{"train": list(split["train"]), "val": list(split["val"])}]))
    return path


def scores(pred: Path, labels: Path, class_names: Sequence[str], output: Path) -> dict:
    """Mean Dice and HD95 per foreground class over the test cases (one evaluator for both)."""
    from volseg.evaluation import evaluate

    report = evaluate(pred, labels, output, class_names=class_names, metrics=["dice", "hd95"])
    if report["failed"]:
        raise RuntimeError(f"{pred}: could not score {report['failed']}")
    summary = report["summary"]
    # HD95 is None where no case had the structure in both maps (infinite distances)
    return {metric: {name: summary[name][metric]["mean"] for name in class_names[1:]}
            for metric in ("dice", "hd95")}


def run_nnunet(raw: Path, work: Path, split: Mapping, epochs: int, iterations: int,
               python: str, device: str, gpu_memory_gb: float | None, workers: int,
               class_names: Sequence[str]) -> ToolResult:
    """nnU-Net's plan and preprocessing, training and prediction; scored on the test cases."""
    bin_dir = Path(python).parent
    env = {**os.environ, "nnUNet_raw": str(raw.parent), "nnUNet_results": str(work / "results"),
           "nnUNet_preprocessed": str(work / "preprocessed"), "nnUNet_n_proc_DA": str(workers),
           "nnUNet_compile": "false"}
    plan = [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
            "3d_fullres", "-np", str(max(workers, 1)), "--verify_dataset_integrity"]
    if gpu_memory_gb is not None:
        plan += ["-gpu_memory_target", str(gpu_memory_gb)]
    result = ToolResult("nnU-Net v2", "steps", epochs * iterations)
    result.plan_s, _ = measured(plan, env, work / "nnunet_plan.log")
    write_nnunet_split(work / "preprocessed", split)
    validation = max(1, round(iterations * NNUNET_VAL_SHARE))
    result.train_s, result.train_peak_mb = measured(
        [python, "-c", NNUNET_TRAIN, str(epochs), str(iterations), str(validation), device,
         str(DATASET_ID)], env, work / "nnunet_train.log")
    predictions = work / "nnunet_predictions"
    result.predict_s, result.predict_peak_mb = measured(
        [str(bin_dir / "nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions),
         "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-chk", "checkpoint_final.pth",
         "-device", device, "-npp", "1", "-nps", "1"], env, work / "nnunet_predict.log")
    plans = json.loads((work / "preprocessed" / raw.name / "nnUNetPlans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    # nnU-Net's patch follows its transposed (z, y, x) array axes: written here as x, y, z
    order = plans["transpose_forward"]
    patch = [fullres["patch_size"][order.index(2 - axis)] for axis in range(3)]
    result.details = {"patch": patch, "batch": fullres["batch_size"],
                      "features": fullres["architecture"]["arch_kwargs"]["features_per_stage"]}
    found = scores(predictions, raw / "labelsTs", class_names, work / "nnunet_evaluation")
    result.dice, result.hd95 = found["dice"], found["hd95"]
    return result


def run_volseg(raw: Path, work: Path, overrides: Sequence[str], steps: int | None,
               seconds: float | None, epochs: int, device: str, gpu_memory_gb: float | None,
               class_names: Sequence[str]) -> ToolResult:
    """volseg's plan, training (``steps`` optimizer steps, or ``seconds`` of training) and
    prediction; scored on the test cases."""
    volseg = [sys.executable, "-m", "volseg"]
    folder = work / "volseg"
    plan_file = folder / "plan.yaml"
    options = [f"plan.output={plan_file}", "plan.overwrite=true"]
    if gpu_memory_gb is not None:
        options.append(f"plan.gpu_memory_gb={gpu_memory_gb}")
    result = ToolResult("volseg", "steps" if seconds is None else "time", steps)
    result.plan_s, _ = measured([*volseg, "plan", *overrides, *options],
                                log=work / "volseg_plan.log")

    planned = yaml.safe_load(plan_file.read_text())
    batch = planned["data"]["batch_size"]
    per_epoch = max(1, steps // epochs)
    if seconds is None:
        budget = [f"trainer.max_epochs={epochs}"]
    else:  # epochs as long as nnU-Net's; Lightning stops when the time is up
        minutes, second = divmod(int(seconds), 60)
        hours, minute = divmod(minutes, 60)
        limit = f"{hours // 24:02d}:{hours % 24:02d}:{minute:02d}:{second:02d}"  # DD:HH:MM:SS
        budget = ["trainer.max_epochs=100000", f"++trainer.max_time='{limit}'"]
    budget.append(f"data.samples_per_epoch={per_epoch * batch}")
    accelerator = "gpu" if device == "cuda" else "cpu"
    result.train_s, result.train_peak_mb = measured(
        [*volseg, "train", f"plan={plan_file}", *overrides, *budget, "test=false",
         f"trainer.accelerator={accelerator}", f"paths.log_dir={folder / 'outputs'}",
         "trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null"],
        log=work / "volseg_train.log")
    run = max((folder / "outputs" / "train" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    metrics = json.loads((run / METRICS_JSON).read_text())
    result.steps = metrics["epochs"] * per_epoch  # whole epochs: the time budget stops mid-way
    checkpoint = metrics["best_model_path"]
    predictions = work / "volseg_predictions"
    result.predict_s, result.predict_peak_mb = measured(
        [*volseg, "predict", f"ckpt_path={checkpoint}", f"input={raw / 'imagesTs'}",
         f"output={predictions}", f"device={device}", "overwrite=true",
         f"hydra.run.dir={work / 'volseg_predict'}"], log=work / "volseg_predict.log")
    result.details = {"patch": planned["data"]["patch_size"], "batch": batch,
                      "features": planned["model"]["features"], "epochs": metrics["epochs"]}
    found = scores(predictions, raw / "labelsTs", class_names, work / "volseg_evaluation")
    result.dice, result.hd95 = found["dice"], found["hd95"]
    return result


def reuse(path: Path, settings: Mapping, measure: Callable[[], ToolResult]) -> ToolResult:
    """The result saved at ``path`` by an earlier run of the same ``settings`` in this work
    folder (``--folder``), else ``measure()``, saved there: a long side-by-side that fails
    late resumes where it stopped."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["settings"] == json.loads(json.dumps(settings)):
            print(f"reusing {path}", file=sys.stderr)
            return ToolResult(**saved["result"])
    result = measure()
    path.write_text(json.dumps({"settings": settings, "result": asdict(result)}, indent=1))
    return result


def format_table(results: Sequence[ToolResult], class_names: Sequence[str]) -> str:
    """One row per run: budget, times, memory, per-class Dice and HD95."""
    names = list(class_names[1:])
    head = (["tool", "budget", "steps", "plan s", "train s", "predict s", "train peak MB"]
            + [f"Dice {n}" for n in names] + ["mean Dice"] + [f"HD95 {n} mm" for n in names]
            + ["patch", "batch", "features"])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in results:
        cells = [r.tool, r.budget, "-" if r.steps is None else str(r.steps), f"{r.plan_s:.0f}",
                 f"{r.train_s:.0f}", f"{r.predict_s:.0f}", f"{r.train_peak_mb:,.0f}",
                 *(f"{r.dice[n]:.3f}" for n in names), f"{r.mean_dice:.3f}",
                 *("inf" if r.hd95[n] is None else f"{r.hd95[n]:.1f}" for n in names),
                 "x".join(map(str, r.details.get("patch", []))), str(r.details.get("batch", "")),
                 f"{min(r.details.get('features', [0]))}-{max(r.details.get('features', [0]))}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dataset_and_split(overrides: Sequence[str]) -> tuple[Path, dict, list[str]]:
    """The data config's root (generated on first use), its split and class names."""
    from hydra.utils import instantiate

    from volseg.runs.compose import compose_config

    cfg = compose_config(list(overrides))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    split = json.loads(Path(cfg.data.split.file).read_text())
    if cfg.data.get("fold") is not None:
        raise ValueError("data.fold: the side-by-side uses the plain train/val/test split")
    if not split.get("test"):
        raise ValueError(f"{cfg.data.split.file}: no test cases to score (data.split.test)")
    return Path(cfg.data.root), split, list(cfg.data.class_names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=50, help="optimizer steps per epoch")
    parser.add_argument("--budget", choices=["steps", "time", "both"], default="both",
                        help="volseg trains nnU-Net's number of steps, its wall time, or both")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="both planners' memory target (default: each tool's, 8 GB)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python environment that has nnunetv2 (default: this one)")
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1),
                        help="nnU-Net's augmentation processes (nnUNet_n_proc_DA)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="volseg overrides naming the dataset, e.g. data=decathlon "
                             "data.root=<Dataset folder> (default: the CT phantom)")
    parser.add_argument("--folder", help="work folder (default: a temporary one, removed)")
    parser.add_argument("--markdown", help="also write the report to this Markdown file")


def run(args: argparse.Namespace) -> int:
    """Run the side-by-side from parsed arguments; print (and write) the table."""
    check = subprocess.run([args.python, "-c", "import nnunetv2"], capture_output=True)
    if check.returncode != 0:
        print(f"error: {args.python} cannot import nnunetv2: pip install 'volseg[peer]' there, "
              "or name such an environment with --python", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.iterations < 1:
        print("error: --epochs and --iterations must be >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="volseg-bench-nnunet-") as scratch:
        work = Path(args.folder or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        try:
            source, split, class_names = dataset_and_split(args.override)
            raw = nnunet_raw_dataset(source, split, work / "raw")
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        steps = args.epochs * args.iterations
        settings = {"epochs": args.epochs, "iterations": args.iterations,
                    "gpu_memory_gb": args.gpu_memory_gb, "device": args.device,
                    "workers": args.workers, "override": list(args.override)}
        nnunet = reuse(work / "nnunet_result.json", settings, lambda: run_nnunet(
            raw, work, split, args.epochs, args.iterations, args.python, args.device,
            args.gpu_memory_gb, args.workers, class_names))
        results = [nnunet]
        budgets = {"steps": [None], "time": [nnunet.train_s],
                   "both": [None, nnunet.train_s]}[args.budget]
        for seconds in budgets:
            name = "volseg_steps" if seconds is None else "volseg_time"
            results.append(reuse(work / f"{name}_result.json", {**settings, "seconds": seconds},
                                 lambda s=seconds: run_volseg(
                                     raw, work, args.override, steps, s, args.epochs,
                                     args.device, args.gpu_memory_gb, class_names)))
    machine = machine_description(args.device)
    table = format_table(results, class_names)
    print(f"{machine}\n\n{table}")
    if args.markdown:
        command = rerun_command("nnunet", args, ("epochs", "iterations", "budget", "device",
                                                 "workers", "gpu_memory_gb"),
                                repeated=("override",))
        write_report(args.markdown, "volseg against nnU-Net v2", command, machine,
                     __doc__.split("\n\n", 1)[1], table)
    return 0
