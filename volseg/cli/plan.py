"""``volseg plan data=<name> [key=value ...] [plan.<option>=<value> ...]``: plan a dataset.

Composes ``train.yaml`` with the same overrides as ``volseg train`` (``--config-dir DIR`` adds
a folder of your own configs), builds the data module (no training), fingerprints its cases
(`volseg.data.fingerprint`), writes the fingerprint beside the cache, prints it, plans the
training by nnU-Net's rules (`volseg.planning.plan`) and writes the plan as a Hydra config
(``plans/<data>.yaml`` by default) that ``volseg train plan=<file>`` trains with.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from volseg.data.fingerprint import Fingerprint, compute_fingerprint, fingerprint_path
from volseg.planning.plan import OPTIONS, Plan, make_plan
from volseg.planning.plan_file import write_plan_file
from volseg.runs.compose import compose_config, split_config_dir

USAGE = """usage: volseg plan [--config-dir DIR] data=<name> [key=value ...] [plan.<opt>=<v> ...]

Fingerprints the dataset of data=<name>, plans spacing, normalisation, patch, batch and network,
and writes the plan file that `volseg train plan=<file>` trains with.
Plan options (defaults): """ + ", ".join(f"plan.{k}={v}" for k, v in OPTIONS.items())


def plan_file_config(plan: Plan, cfg: DictConfig, fingerprint_file: Path) -> dict:
    """The plan file's content: the groups it selects and the settings it sets, on top of
    ``cfg``'s data config; ``plan:`` records what it was made from."""
    hydra = HydraConfig.get()
    settings = {"data": typed_data_settings(cfg, hydra.overrides.task)}
    planned = plan.config()
    settings["data"].update(planned.pop("data"))
    settings["data"]["root"] = str(Path(cfg.data.root).resolve())
    settings.update(planned)
    if cfg.data.preprocessing.get("orientation"):
        settings["data"]["preprocessing"]["orientation"] = cfg.data.preprocessing.orientation
    groups = {"data": hydra.runtime.choices["data"], "model": "dynamic_unet"}
    if plan.network.deep_supervision:
        groups["loss"] = "deep_supervision"
        ignore_index = cfg.data.get("ignore_index")
        if ignore_index is not None:
            settings["loss"] = {"loss": {"ignore_index": ignore_index}}
    memory = plan.network.memory
    settings["plan"] = {
        "fingerprint": str(fingerprint_file),
        "gpu_memory_gb": plan.network.budget_gb,
        "estimated_memory_gb": round(memory.training_gb, 3),
        "median_shape": plan.median_shape,
    }
    return {"defaults": [{f"override /{group}": option} for group, option in groups.items()],
            **settings}


def typed_data_settings(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """The ``data.*`` values the user set on the command line, as composed: the plan keeps
    them (a phantom's size, a split), so training sees the dataset the plan was made from."""
    settings: dict = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key.startswith("data.") or override.startswith("~"):
            continue
        node = settings
        *parents, leaf = key.split(".")[1:]
        for part in parents:
            node = node.setdefault(part, {})
        value = OmegaConf.select(cfg, key)
        node[leaf] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(
            value) else value
    return settings


def run_plan(
    cfg: DictConfig, options: Mapping | None = None, console: Console | None = None
) -> tuple[Plan, Fingerprint, Path]:
    """Fingerprint ``cfg.data``'s cases, save the fingerprint, plan, print and write the plan.

    Returns:
        The plan, the fingerprint, and the plan file written.

    Raises:
        FileExistsError: the plan file exists and ``plan.overwrite`` is false.
    """
    console = console or Console()
    options = {**OPTIONS, **(options or {})}
    choice = HydraConfig.get().runtime.choices["data"]
    output = Path(options["output"] or Path("plans") / f"{Path(str(choice)).name}.yaml")
    if output.exists() and not options["overwrite"]:
        raise FileExistsError(f"plan.output={output} exists; plan.overwrite=true replaces it")
    datamodule = instantiate(cfg.data)
    datamodule.layout.prepare()  # generates the synthetic dataset on first use
    cases = datamodule.cases()
    preprocessor = datamodule.preprocessor
    with console.status("fingerprinting") as status:
        fingerprint = compute_fingerprint(
            datamodule.layout, cases, datamodule.num_classes, preprocessor.orientation,
            samples_per_case=int(options["samples_per_case"]),
            progress=lambda case_id: status.update(f"fingerprinting {case_id}"),
        )
    path = fingerprint.save(fingerprint_path(cfg.data.cache_dir, cfg.data.root))
    plan = make_plan(fingerprint, datamodule.in_channels, datamodule.layout.channel_names,
                     preprocessor, options)
    write_plan_file(output, plan_file_config(plan, cfg, path),
                    f"volseg plan data={choice}: {len(cases)} cases of {cfg.data.root}")
    print_plan(console, fingerprint, plan, list(cfg.data.class_names), path)
    console.print(f"plan written to {output}; train with: volseg train plan={output}",
                  soft_wrap=True)
    return plan, fingerprint, output


def print_plan(
    console: Console, fingerprint: Fingerprint, plan: Plan, class_names: Sequence[str],
    path: Path,
) -> None:
    """The fingerprint and the plan as Rich tables, then the overrides to use."""
    summary = fingerprint.summary()
    axes = f" ({fingerprint.orientation} axes)" if fingerprint.orientation else ""
    table = _axes_table(f"Dataset fingerprint: {summary['cases']} cases{axes}")
    for label, key, unit in [("median spacing", "median_spacing", " mm"),
                             ("min spacing", "min_spacing", " mm"),
                             ("max spacing", "max_spacing", " mm"),
                             ("median shape", "median_shape", ""),
                             ("median shape, non-zero box", "median_cropped_shape", "")]:
        table.add_row(label, *(f"{v:.4g}{unit}" for v in summary[key]))
    console.print(table)

    intensity = Table(title="Foreground intensities (label > 0), sampled")
    for column in ("channel", "voxels", "mean", "std", "0.5%", "50%", "99.5%", "min", "max"):
        intensity.add_column(column)
    for channel, s in enumerate(fingerprint.intensity):
        values = [s.mean, s.std, s.percentile_00_5, s.percentile_50, s.percentile_99_5, s.min,
                  s.max]
        intensity.add_row(str(channel), str(s.voxels),
                          *("-" if v is None else f"{v:.5g}" for v in values))
    console.print(intensity)

    classes = Table(title="Classes")
    for column in ("class", "voxels", "cases holding it"):
        classes.add_column(column)
    names = [*class_names, *(str(c) for c in range(len(class_names), fingerprint.num_classes))]
    for name, voxels, fraction in zip(names, summary["class_voxels"],
                                      summary["class_case_fraction"]):
        classes.add_row(name, f"{voxels:,}", f"{fraction:.0%}")
    console.print(classes)

    network = plan.network
    planned = _axes_table(f"Plan (nnU-Net's rules, {network.budget_gb:g} GiB per step)")
    if plan.spacing is not None:
        planned.add_row("target spacing", *(f"{v:.4g} mm" for v in plan.spacing))
    planned.add_row("median shape there", *map(str, plan.median_shape))
    planned.add_row("patch", *map(str, plan.patch_size))
    for level, (stride, kernel) in enumerate(zip(network.topology.strides,
                                                  network.topology.kernel_sizes, strict=True)):
        planned.add_row(f"level {level}: {network.features[level]} channels, stride / kernel",
                        *(f"{s} / {k}" for s, k in zip(stride, kernel, strict=True)))
    console.print(planned)
    intensity = ", ".join(f"{k}={v}" for k, v in plan.preprocessing.items() if k != "statistics")
    console.print(f"batch {network.batch_size}, {network.norm} norm, deep supervision "
                  f"{'on' if network.deep_supervision else 'off'}; estimated "
                  f"{network.memory.training_gb:.2f} GiB per training step (float32); "
                  f"preprocessing: {intensity}", soft_wrap=True)
    if plan.spacing is None:
        console.print("data.preprocessing.fixed_size is set: volumes are resized, not resampled")
    if plan.separate_z:
        console.print("anisotropic spacing: nnU-Net resamples the coarse axis with nearest "
                      "neighbour (data.preprocessing.anisotropy_threshold)")
    console.print(f"fingerprint written to {path}", soft_wrap=True)


def _axes_table(title: str) -> Table:
    """A table with a row label and one column per axis."""
    table = Table(title=title)
    table.add_column("", style="bold")
    for axis in "xyz":
        table.add_column(axis)
    return table


def split_plan_options(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Split ``plan.<option>=<value>`` (values read as YAML) off the overrides.

    Raises:
        ValueError: an option not in `OPTIONS`, named.
    """
    options, rest = {}, []
    for argument in argv:
        key, _, value = argument.lstrip("+").partition("=")
        if not key.startswith("plan."):
            rest.append(argument)
            continue
        name = key.removeprefix("plan.")
        if name not in OPTIONS:
            raise ValueError(f"{key}: unknown plan option; choose from "
                             f"{', '.join('plan.' + k for k in OPTIONS)}")
        options[name] = yaml.safe_load(value) if value else None
    return options, rest


def main(argv: Sequence[str] | None = None) -> Plan:
    """Entry point of ``volseg plan``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        raise SystemExit(0)
    config_dir, overrides = split_config_dir(argv)
    options, overrides = split_plan_options(overrides)
    plan, _, _ = run_plan(compose_config(overrides, config_dir=config_dir), options)
    return plan


if __name__ == "__main__":
    main()
