"""``volseg bench models``: size, speed and memory of every ``conf/model/*.yaml``.

For each model config the network is built with 1 input and 3 output channels (the synthetic
data's setting, so rows compare like with like), its trainable parameters are counted, and one
training step (forward, a scalar loss, backward) on a 1x1xSxSxS patch is timed. Each network is
measured in a fresh Python process: the peak-memory high-water mark and the allocator caches of
one network must not leak into the next one's numbers.

Where a paper states a parameter count, the network is also built with the paper's input and
output channels and both counts are shown: ours at that setting, and the claim.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn

from volseg.bench.machine import machine_description
from volseg.io.atomic import write_report
from volseg.runs.compose import builtin_config_dir, compose_config

MODEL_CONFIGS = builtin_config_dir() / "model"
BENCH_IN_CHANNELS = 1
BENCH_OUT_CHANNELS = 3


@dataclass(frozen=True)
class PaperSetting:
    """The channels a paper's network was described with, and the parameter count it states."""

    in_channels: int
    out_channels: int
    claimed: str  # as the paper states it, e.g. "19,069,955" or "~26 M"
    source: str


# Keyed by config name, not class: `unet3d_small` is a UNet3D but not the paper's network.
# A network class may instead carry ``PAPER_PARAMETERS`` (see `paper_claim`).
PAPER_SETTINGS: dict[str, PaperSetting] = {
    "unet3d": PaperSetting(3, 3, "19,069,955", "Çiçek et al. 2016, 3 in / 3 out; the count "
                           "has no batch-norm parameters (see the UNet3D docstring)"),
    "resnet_seg": PaperSetting(2, 5, "~26 M", "the paper's 2 in / 5 out setting"),
}


@dataclass
class ModelResult:
    """One table row; ``None`` where a value was not measured (see ``note``)."""

    name: str
    network: str = ""
    parameters: int | None = None
    paper_parameters: int | None = None  # ours, at the paper's channels
    paper_claim: str = ""
    paper_channels: tuple[int, int] | None = None
    seconds: float | None = None  # median forward+backward time over the repeats
    peak_mb: float | None = None  # MiB above the built network, over one training step
    notes: list[str] = field(default_factory=list)


def model_config_paths(conf_dir: str | os.PathLike = MODEL_CONFIGS) -> dict[str, Path]:
    """Every ``*.yaml`` under ``conf_dir``, by name (the file stem), sorted."""
    return {p.stem: p for p in sorted(Path(conf_dir).glob("*.yaml"))}


def model_config(
    path: str | os.PathLike, in_channels: int, out_channels: int, **overrides: Any
) -> dict[str, Any]:
    """The config of ``path`` (a ``model/<name>.yaml``) as ``volseg train model=<name>``
    composes it (`volseg.runs.compose.compose_config`, with ``path``'s config folder as
    ``--config-dir`` when it is not volseg's own), as a plain dict ready for
    `hydra.utils.instantiate`.

    ``in_channels``/``out_channels`` replace the config's values; interpolations into the data
    config (``${data.in_channels}``, ``${data.num_classes}``) resolve to them as well.
    """
    path = Path(path).resolve()
    own = path.parent == MODEL_CONFIGS.resolve()
    composed = compose_config([f"model={path.stem}"],
                              config_dir=None if own else path.parent.parent)
    cfg = OmegaConf.create(OmegaConf.to_container(composed.model, resolve=False))
    cfg.in_channels = in_channels
    cfg.out_channels = out_channels
    for key, value in overrides.items():
        cfg[key] = value
    root = OmegaConf.create({"data": {"in_channels": in_channels, "num_classes": out_channels}})
    root.model = cfg
    return OmegaConf.to_container(root.model, resolve=True)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def paper_claim(name: str, config: Mapping[str, Any]) -> tuple[PaperSetting | None, str]:
    """The paper setting for config ``name`` and the count the paper claims ("" if none).

    `PAPER_SETTINGS` wins. Otherwise a ``PAPER_PARAMETERS`` attribute of the network class is
    used, but only for a config that keeps every constructor default (a narrowed variant of a
    paper's network is not the paper's network).
    """
    if name in PAPER_SETTINGS:
        return PAPER_SETTINGS[name], PAPER_SETTINGS[name].claimed
    try:
        cls = get_class(config["_target_"])
    except Exception:  # noqa: BLE001 - an unimportable class is reported by the measurement
        return None, ""
    claimed = getattr(cls, "PAPER_PARAMETERS", None)
    if claimed is None:
        return None, ""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None, ""
    for key, value in config.items():
        if key in ("_target_", "in_channels", "out_channels"):
            continue
        param = signature.parameters.get(key)
        if param is None or param.default != value:
            return None, ""
    text = f"{claimed:,}" if isinstance(claimed, int) else str(claimed)
    return None, text


def _count_without_allocating(config: Mapping[str, Any]) -> int:
    # The meta device gives shapes without memory: paper-width networks cost nothing to count.
    try:
        with torch.device("meta"):
            return count_parameters(instantiate(config))
    except Exception:  # noqa: BLE001 - some constructors run real ops; fall back to the CPU
        return count_parameters(instantiate(config))


def measure(
    config: Mapping[str, Any], size: int, repeats: int, device: str = "cpu", threads: int = 1
) -> dict[str, Any]:
    """Build ``config`` and time training steps on a (1, C, size, size, size) random patch.

    One untimed step comes first (lazy initialisation, kernel choice). The time is the median
    of ``repeats`` further steps, in seconds; the memory is their peak above what was in use
    before them (the built network and the runtime): activations, gradients and workspace.
    Run this in a fresh process for trustworthy CPU memory (see `measure_in_subprocess`).

    Returns:
        ``parameters``, ``network`` (class name), and either ``seconds`` and ``peak_mb`` (MiB)
        or ``note`` saying why the step was skipped.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = instantiate(config).to(device)
    result: dict[str, Any] = {"parameters": count_parameters(net),
                              "network": type(net).__name__}
    divisor = getattr(net, "divisor", None)
    if isinstance(divisor, int) and size % divisor:
        result["note"] = f"not timed: size {size} is not a multiple of its divisor {divisor}"
        return result
    x = torch.randn(1, int(config["in_channels"]), size, size, size, device=device)
    net.train()

    def step() -> None:
        out = net(x)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        # Every output takes part, so deep-supervision heads are in the backward pass too.
        sum(o.float().square().mean() for o in outputs).backward()
        net.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    step()  # untimed: lazy initialisation, first allocations, kernel choice
    baseline = _reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result["peak_mb"] = (_peak_memory(device) - baseline) / 2**20
    result["seconds"] = statistics.median(times)
    return result


def _reset_peak_memory(device: str) -> int:
    """Reset the peak-memory counter; return the bytes in use now."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    # Linux: "5" resets this process's peak resident set size (VmHWM) to the current one.
    # Elsewhere VmHWM / ru_maxrss may keep an older, higher peak: the result is an upper bound.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_bytes("VmRSS") or _max_rss_bytes()


def _peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    return _proc_status_bytes("VmHWM") or _max_rss_bytes()


def _proc_status_bytes(key: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # the file states kB
    except OSError:
        pass
    return 0


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


_RESULT_PREFIX = "VOLSEG_BENCH_RESULT "


def measure_in_subprocess(
    config: Mapping[str, Any], size: int, repeats: int, device: str = "cpu", threads: int = 1
) -> dict[str, Any]:
    """`measure` in a fresh Python process; a failure comes back as ``{"note": ...}``."""
    request = json.dumps({"config": config, "size": size, "repeats": repeats,
                          "device": device, "threads": threads})
    env = dict(os.environ)
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    # A fixed glibc mmap threshold: large blocks go back to the system when freed, so the
    # untimed step's memory does not linger as reusable heap and hide the measured step's peak.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    proc = subprocess.run([sys.executable, "-m", "volseg.bench.models"], input=request,
                          capture_output=True, text=True, env=env, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"note": f"measurement process failed (exit {proc.returncode}): {tail}"}


def _worker() -> int:
    """Subprocess side of `measure_in_subprocess`: request JSON on stdin, result on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        result = measure(request["config"], request["size"], request["repeats"],
                         request["device"], request["threads"])
    except Exception as error:  # noqa: BLE001 - every failure becomes a note in the table
        result = {"note": _describe_failure(error)}
    print(_RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def _describe_failure(error: BaseException) -> str:
    # Hydra wraps the real cause (often a missing optional package); report the innermost one.
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        top = cause.name.split(".")[0]
        return f"not built: optional package {top!r} is missing (pip install {top})"
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"failed: {type(cause).__name__}: {first_line}"


def benchmark_models(
    names: Sequence[str] | None = None,
    size: int = 64,
    repeats: int = 3,
    device: str = "cpu",
    threads: int | None = None,
    conf_dir: str | os.PathLike = MODEL_CONFIGS,
    isolate: bool = True,
) -> list[ModelResult]:
    """Measure the named model configs (default: all of ``conf_dir``), one fresh process each.

    Args:
        names: config stems, e.g. ``["unet3d", "unet3d_small"]``.
        size: edge of the cubic training patch, voxels.
        repeats: timed training steps per network (after one untimed step).
        device: "cpu" or a CUDA device such as "cuda" / "cuda:0".
        threads: intra-op CPU threads; default ``torch.get_num_threads()``.
        isolate: measure in a subprocess (``False`` runs in this process: faster, but the CPU
            peak memory then includes whatever this process held before).

    Raises:
        ValueError: an unknown name, ``size < 1`` or ``repeats < 1``.
    """
    paths = model_config_paths(conf_dir)
    names = list(paths) if names is None else list(names)
    unknown = [n for n in names if n not in paths]
    if unknown:
        raise ValueError(f"unknown model config(s) {unknown}; available: {sorted(paths)}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = threads or torch.get_num_threads()
    run = measure_in_subprocess if isolate else _measure_catching

    results = []
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)  # minutes per net on a CPU
        row = ModelResult(name)
        config = model_config(paths[name], BENCH_IN_CHANNELS, BENCH_OUT_CHANNELS)
        measured = run(config, size, repeats, device, threads)
        row.network = measured.get("network", str(config.get("_target_", "")).rsplit(".")[-1])
        row.parameters = measured.get("parameters")
        row.seconds = measured.get("seconds")
        row.peak_mb = measured.get("peak_mb")
        if "note" in measured:
            row.notes.append(measured["note"])
        setting, row.paper_claim = paper_claim(name, config)
        if setting is not None and row.parameters is not None:
            row.paper_channels = (setting.in_channels, setting.out_channels)
            paper_config = model_config(paths[name], *row.paper_channels)
            row.paper_parameters = _count_without_allocating(paper_config)
        results.append(row)
    return results


def _measure_catching(config: Mapping[str, Any], *args: Any) -> dict[str, Any]:
    try:
        return measure(config, *args)
    except Exception as error:  # noqa: BLE001 - every failure becomes a note in the table
        return {"note": _describe_failure(error)}


def format_table(results: Sequence[ModelResult], size: int) -> str:
    """The results as a Markdown table, with notes on skipped models and paper settings below."""
    lines = [
        f"| model | network | parameters ({BENCH_IN_CHANNELS}→{BENCH_OUT_CHANNELS}) "
        f"| paper parameters: ours / claimed | fwd+bwd s ({size}³) | peak MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    footnotes = []
    for r in results:
        paper = ""
        if r.paper_parameters is not None:
            paper = f"{r.paper_parameters:,} / {r.paper_claim or '?'}"
            paper += f" ({r.paper_channels[0]}→{r.paper_channels[1]})"
        elif r.paper_claim:
            paper = f"— / {r.paper_claim}"
        cells = [
            r.name,
            r.network,
            f"{r.parameters:,}" if r.parameters is not None else "—",
            paper,
            f"{r.seconds:.3f}" if r.seconds is not None else "—",
            f"{r.peak_mb:,.0f}" if r.peak_mb is not None else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        footnotes += [f"- {r.name}: {note}" for note in r.notes]
        if r.name in PAPER_SETTINGS and r.paper_parameters is not None:
            footnotes.append(f"- {r.name}: paper setting: {PAPER_SETTINGS[r.name].source}")
    if footnotes:
        lines += ["", *footnotes]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``models`` subcommand's options."""
    parser.add_argument("--size", type=int, default=64,
                        help="edge of the cubic 1x1xS^3 training patch, voxels (default 64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed forward+backward steps after one untimed step (default 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (default: torch.get_num_threads())")
    parser.add_argument("--configs", default=None,
                        help="comma-separated conf/model names (default: all)")
    parser.add_argument("--conf-dir", default=str(MODEL_CONFIGS), help="folder of model YAMLs")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="also write the table with a short header to PATH, "
                             "e.g. docs/models.md")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="measure in this process (faster; CPU memory less exact)")


def run(args: argparse.Namespace) -> int:
    """Run the ``models`` benchmark from parsed arguments; print (and write) the table."""
    names = [n.strip() for n in args.configs.split(",") if n.strip()] if args.configs else None
    threads = args.threads or torch.get_num_threads()
    try:
        results = benchmark_models(names, args.size, args.repeats, args.device, threads,
                                   args.conf_dir, args.isolate)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    machine = machine_description(args.device, threads)
    table = format_table(results, args.size)
    print(f"{machine}\ndevice: {args.device}\n\n{table}")
    if args.markdown:
        command = "volseg bench models " + " ".join(
            f"--{k} {v}" for k, v in (("size", args.size), ("repeats", args.repeats),
                                      ("device", args.device), ("threads", threads)))
        write_report(
            args.markdown, "Network benchmarks", command, f"{machine}; device {args.device}",
            f"Every network is built with {BENCH_IN_CHANNELS} input and {BENCH_OUT_CHANNELS} "
            "output channels; *parameters* counts trainable elements. *fwd+bwd s* is the median "
            "time of one training step (forward, mean-square loss, backward) on a 1×1×S³ "
            "patch after one untimed step; *peak MB* is the peak memory (resident set on CPU, "
            "allocated on CUDA) of that step above the built network, in MiB: activations, "
            "gradients, workspace. Each network runs in its own process. *Paper parameters* "
            "builds the network with the channels the paper used.",
            table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
