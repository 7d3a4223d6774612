"""``volseg report`` as a user types it."""

from __future__ import annotations

import subprocess
import sys

from tests.report.sweeps import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "volseg", "report", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_writes_the_leaderboard(sweep, tmp_path):
    result = run_cli(str(sweep), "--metric", "val/hd95", "--lower-is-better",
                     "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert ("| # | configuration | status | val/hd95 (mm) | val/dice | Dice organ | Dice lesion "
            "| parameters |") in result.stdout
    assert "| 1 | model=unet3d loss=dice_ce | completed | 2.50 | 0.850 |" in result.stdout
    assert (tmp_path / "out" / "leaderboard.md").is_file()
    assert "--metric val/hd95" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_cli_empty_folder_is_one_line_error(tmp_path):
    result = run_cli(str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path}: no job folders in it (none holds "
                                      ".hydra/ or metrics.json)")
    assert result.stdout == ""
