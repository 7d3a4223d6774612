"""What a benchmark's command line reads and records: list arguments and the command line that
reruns it (its Markdown file: `volseg.io.atomic.write_report`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


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
