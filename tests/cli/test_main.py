"""The ``volseg`` command as a user types it: its help, its subcommands, a bad one."""

import subprocess
import sys
from pathlib import Path

import pytest

from volseg.cli import SUBCOMMANDS, main


def volseg(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``volseg <arguments>``: the console script installed beside this Python."""
    script = Path(sys.executable).parent / "volseg"
    return subprocess.run([str(script), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")]
    assert listed == ["train", "predict", "evaluate", "plan", "verify", "report", "bench"]


def test_no_subcommand_or_an_unknown_one_exits_2(capsys):
    assert main([]) == 2
    assert main(["trian"]) == 2
    assert "unknown subcommand 'trian'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_help_is_hydras_with_the_config_groups(tmp_path):
    done = volseg("train", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("volseg train is powered by Hydra.")
    groups = {line.split(":")[0] for line in done.stdout.splitlines() if ": " in line}
    assert {"model", "loss", "data", "trainer", "experiment", "hparams_search"} <= groups
    assert not (tmp_path / "outputs").exists()  # help makes no run folder


# Hydra apps change process-wide state (logging, Hydra's global instance): those run as the
# user runs them, in a process of their own; the others answer help in this one.
HYDRA_APPS = ("predict", "evaluate")


@pytest.mark.slow
@pytest.mark.parametrize("name", HYDRA_APPS)
def test_hydra_subcommands_answer_help(name, tmp_path):
    done = volseg(name, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.startswith(f"volseg {name} is powered by Hydra.")


@pytest.mark.parametrize("name", [n for n in SUBCOMMANDS if n not in ("train", *HYDRA_APPS)])
def test_other_subcommands_answer_help(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() sets it for the subcommand
    try:
        status = main([name, "--help"])
    except SystemExit as exit_:  # argparse's help exits
        status = exit_.code
    assert status == 0
    assert f"volseg {name}" in capsys.readouterr().out
