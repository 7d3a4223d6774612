"""What a benchmark's command line reads and records, and the Markdown file it writes with
``--markdown PATH``: title, command, machine, table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from volseg.atomic import atomic_path


def comma_ints(text: str) -> list[int]:
    """An argparse ``type``: ``"128,128,96"`` -> ``[128, 128, 96]`` (empty parts skipped)."""
    return [int(part) for part in text.split(",") if part.strip()]


def rerun_command(
    subcommand: str, args: argparse.Namespace, options: Sequence[str],
    repeated: Sequence[str] = (),
) -> str:
    """The ``volseg bench`` command line that gives ``args``' values to ``options``.

    ``options`` are attribute names (``model_spacing`` is written ``--model-spacing``); list
    values are written space-separated, as argparse's ``nargs`` reads them, and an option left
    unset (``None``) is left out. ``repeated`` options (argparse's ``action="append"``) come
    last, written once per value: ``--override a --override b``.
    """
    parts = [f"volseg bench {subcommand}"]
    for name in options:
        value = getattr(args, name)
        if value is None:
            continue
        text = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"--{name.replace('_', '-')} {text}")
    for name in repeated:
        parts += [f"--{name.replace('_', '-')} {value}" for value in getattr(args, name)]
    return " ".join(parts)


def write_report(
    path: str | Path, title: str, command: str, machine: str, explanation: str, table: str
) -> Path:
    """Write the report to ``path`` (folders made as needed), say so, and return the path.

    Args:
        title: the Markdown heading.
        command: the exact command that measured it, so anyone can rerun it.
        machine: `volseg.bench.machine.machine_description` (and any setting line).
        explanation: what the columns mean and how they were measured.
        table: the Markdown table itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(
            f"# {title}\n\nWritten by `{command}`.\n{machine}.\n\n{explanation}\n\n{table}\n",
            encoding="utf-8",
        )
    print(f"\nwrote {path}")
    return path
