"""Write-then-rename, so no reader or crash ever sees a half-written file."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

# Multi-part suffixes that readers pick the format from; the temporary file keeps them.
_COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix (writers choose the format from it) and starts with a
    dot and carries the process id, so concurrent writers never share it. On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.partial-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(data: object, path: str | os.PathLike) -> Path:
    """Write JSON atomically, pretty-printed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def write_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike,
              columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) as CSV atomically, one column per key.

    Args:
        columns: the columns in order; ``None``: every key of every row, first-seen order.
            A row's missing keys and ``None`` values are empty cells; lists are space-joined.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            values = (row.get(column) for column in columns)
            writer.writerow(["" if v is None else " ".join(map(str, v)) if isinstance(v, list)
                             else v for v in values])
    return path


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
