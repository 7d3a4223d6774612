"""The documentation's second reading path, run as written: datasets, inference, evaluation and
benchmarks (tests/test_docs.py explains how, and runs the first path in another worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_docs import (
    COMMANDS,
    DATA_AND_INFERENCE,
    DocCommand,
    fresh_clone,
    run_documented,
)

# The README's main command: the reader has run it before turning to these pages.
MAIN = next(c for c in COMMANDS if c.page == "README.md")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = fresh_clone(tmp_path_factory)
    run_documented(MAIN, folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if c.page in DATA_AND_INFERENCE],
                         ids=lambda c: c.id)
def test_documented_command(command: DocCommand, clone: Path):
    run_documented(command, clone)
