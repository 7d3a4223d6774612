"""Every shell command in README.md and docs/*.md runs, as written, from a fresh clone.

The commands are the lines of the ```bash blocks (a trailing backslash continues a line; a
heredoc runs to its end marker), taken page by page: README.md first, then the pages in the
order the README links them, then any other page. They run one after another, each in its own
process, from the root of a fresh clone (the files git tracks, copied), as a reader who
follows the documentation would: a later command may use what an earlier one made.

The pages form two reading paths, each with its own clone, so that pytest-xdist runs them in two
workers at once (`--dist loadfile` hands out whole files): this file runs README.md and the
pages about training and sweeps; tests/test_docs_data_inference.py runs `DATA_AND_INFERENCE`
(datasets, inference, evaluation, benchmarks), in a clone where the README's main command
(`volseg train`, with the budget below) has run first, as a reader who starts at the README and
then turns to those pages. This much is added, and nothing else (docs/development.md says so
too):

- a smoke budget appended to the command line (`budget`): one short epoch for ``volseg
  train``, two Optuna trials, small sizes for ``volseg bench``;
- servers (`SERVERS`: TensorBoard, optuna-dashboard) are started, checked to answer, stopped;
- the placeholders filled in (`PLACEHOLDERS`): ``<run>`` and ``<sweep>`` name the newest run
  and sweep folder that earlier commands made; ``<kits23 folder>`` and the other dataset
  placeholders name a small dataset fabricated in that layout, the reader's own data.

A command that cannot run here (a GPU, a SLURM cluster, the test suite itself) is listed in
`NOT_RUN` with the reason; a documented command that is neither run nor listed fails
`test_every_command_is_run_or_listed_with_a_reason`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.data.adapters import trees

ROOT = Path(__file__).resolve().parents[1]
# The environment set-up that starts the README's two commands: .ci/run performs it
# (tests/test_readme.py checks that), so here only what follows it runs.
SETUP = (re.compile(r"python3? -m venv \S+$"), re.compile(r"\. \S+/bin/activate$"),
         re.compile(r"pip install .*"))

# Commands that do not run here, by a regular expression matched against the whole command
# (as written), with the reason.
NOT_RUN = {
    r"^pytest\b": "the test suite itself: CI runs it (.ci/run)",
    r"trainer=gpu|trainer=ddp\b|trainer.devices=[2-9]|augment_device=gpu|device=cuda":
        "needs a CUDA GPU",
    r"hydra/launcher=slurm": "needs a SLURM cluster",
    r"volseg bench nnunet": "needs nnunetv2 (the [peer] extra), whose torch pin pulls a CUDA "
                            "build CI does not install; tests/bench/test_nnunet_bench.py runs a "
                            "tiny side-by-side where it is installed",
}

# The smoke budget, appended to each command of these programs.
TRAIN_BUDGET = ["++trainer.max_epochs=1", "++trainer.limit_train_batches=2",
                "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1",
                "++trainer.num_sanity_val_steps=0"]
OPTUNA_BUDGET = ["hydra.sweeper.n_trials=2"]
BENCH_BUDGET = {
    "models": ["--size", "16", "--repeats", "1", "--configs", "unet3d_small"],
    "metrics": ["--shape", "40", "36", "24", "--repeats", "1"],
    "augment": ["--volume", "40,36,30", "--patch", "16,16,12", "--repeats", "1",
                "--library-repeats", "1"],
    "infer": ["--size", "40", "32", "32", "--tile", "32", "32", "16", "--features", "4",
              "--repeats", "1", "--rounds", "1"],
    "predict": ["--size", "40", "36", "20", "--tile", "16", "16", "16"],
    "data": ["--cases", "3,4", "--size", "24,24,16", "--patch", "16,16,8", "--batches", "2",
             "--workers", "0"],
    "train": ["--steps", "2", "--warmup", "1"],
    "recipes": ["--phantoms", "synthetic", "--recipes", "default", "--seeds", "1",
                "--override", "data.layout.num_cases=6", *TRAIN_BUDGET],
}
TIMEOUT_S = 600
# Commands that serve until stopped: started, checked to print this, then stopped.
SERVERS = {"tensorboard": "http://", "optuna-dashboard": "http://"}


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is written and what it says."""

    page: str  # path relative to the repository root
    line: int  # first line of the command on its page
    text: str  # as written: continuation lines joined, a heredoc kept whole

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages(root: Path = ROOT) -> list[Path]:
    """README.md, then the docs pages in the order README.md links them, then the rest."""
    readme = root / "README.md"
    linked = [root / m for m in re.findall(r"\]\((docs/[\w./-]+\.md)\)", readme.read_text())]
    ordered = [readme] + list(dict.fromkeys(p for p in linked if p.is_file()))
    return ordered + sorted(p for p in (root / "docs").glob("*.md") if p not in ordered)


FENCE = re.compile(r"^```\s*(\S*)\s*$")
HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


def shell_commands(text: str, page: str) -> list[DocCommand]:
    """The commands of a page's ```bash (or ```sh, ```shell) blocks."""
    commands: list[DocCommand] = []
    language = None  # of the open block; None outside blocks
    pending: list[str] = []
    start = 0
    lines = iter(enumerate(text.splitlines(), 1))
    for number, line in lines:
        fence = FENCE.match(line)
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in ("bash", "sh", "shell") or (not pending and
                                                       line.strip().startswith("#")):
            continue
        if not pending:
            if not line.strip():
                continue
            start = number
        marker = HEREDOC.search(line)
        if marker:  # the heredoc's lines belong to this command, up to its end marker
            body = [line]
            for _, next_line in lines:
                body.append(next_line)
                if next_line.strip() == marker.group(1):
                    break
            commands.append(DocCommand(page, start, "\n".join(pending + body)))
            pending = []
            continue
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1].rstrip())
            continue
        pending.append(line.strip())
        commands.append(DocCommand(page, start, " ".join(pending)))
        pending = []
    return commands


def documented_commands(root: Path = ROOT) -> list[DocCommand]:
    return [c for page in pages(root)
            for c in shell_commands(page.read_text(), str(page.relative_to(root)))]


# The second reading path (see the module docstring); every other page is on the first.
DATA_AND_INFERENCE = ("docs/datasets.md", "docs/inference.md", "docs/evaluation.md",
                      "docs/benchmarks.md")


def without_comment(command: str) -> str:
    """The command before an unquoted ``#`` that starts a comment."""
    quote = None
    for i, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].rstrip()
    return command.rstrip()


def runnable_part(command: str) -> str:
    """The command without the environment set-up that opens the README's two commands."""
    parts = [p.strip() for p in without_comment(command).split(" && ")]
    while parts and any(s.fullmatch(parts[0]) for s in SETUP):
        parts.pop(0)
    return " && ".join(parts)


def not_run_reason(command: DocCommand) -> str | None:
    text = runnable_part(command.text) if "\n" not in command.text else command.text
    for pattern, reason in NOT_RUN.items():
        if re.search(pattern, text):
            return reason
    return None


def budget(command: str) -> list[str]:
    """The smoke budget for a command, by its program (see the module docstring)."""
    words = shlex.split(command)
    if words[:2] in (["volseg", "train"], ["python", "train.py"]):
        optuna = "hparams_search=optuna" in words
        return TRAIN_BUDGET + (OPTUNA_BUDGET if optuna else [])
    if words[:2] == ["volseg", "bench"] and len(words) > 2:
        return BENCH_BUDGET.get(words[2], [])
    return []


# --- placeholders: what earlier commands made, and the reader's own datasets ---------------


def newest(folder: Path, must_hold: str = "") -> str:
    """The name of the newest sub-folder of ``folder`` (holding ``must_hold``, if given)."""
    found = [p for p in folder.glob("*") if p.is_dir() and (p / must_hold).exists()]
    if not found:
        raise LookupError(f"no earlier command made a folder in {folder}")
    return max(found, key=lambda p: p.stat().st_mtime).name


DATASETS: dict[str, Callable[[Path], object]] = {
    "luna16 folder": trees.make_luna16,
    "kits23 folder": trees.make_kits23,
    "hipmri folder": trees.make_hipmri,
    "decathlon task folder": trees.make_decathlon,
    "nnunet folder": trees.make_nnunet,
    "nifti folder": trees.make_nifti_folder,
    "dicom folder": trees.make_dicom,
}
PLACEHOLDERS = {"run", "sweep", *DATASETS}
PLACEHOLDER = re.compile(r"<([a-z0-9 ]+)>")


def fill(command: str, clone: Path) -> str:
    """``command`` with every placeholder replaced (datasets are made on first use)."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name == "run":
            return newest(clone / "outputs" / "train" / "runs", "checkpoints/last.ckpt")
        if name == "sweep":
            return newest(clone / "outputs" / "train" / "multiruns")
        folder = clone / "my_datasets" / name.removesuffix(" folder").replace(" ", "_")
        if not folder.exists():
            DATASETS[name](folder)
        return str(folder.relative_to(clone))

    return PLACEHOLDER.sub(value, command)


def unknown_placeholders(command: str) -> set[str]:
    text = command if "\n" in command else without_comment(command)
    return {m for m in PLACEHOLDER.findall(text) if m not in PLACEHOLDERS}


COMMANDS = documented_commands()
TUTORIAL_COMMANDS = [c for c in COMMANDS if c.page not in DATA_AND_INFERENCE]


def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone's files: what git tracks (and new files not ignored), nothing built."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    folder = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_clone(tmp_path_factory)


def environment() -> dict[str, str]:
    """This test's environment, with its Python's scripts (``volseg``) first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLSEG_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_server(command: str, clone: Path, ready: str, seconds: float = 60) -> None:
    """Start a long-running command; pass once its output says ``ready``, then stop it."""
    process = subprocess.Popen(command, shell=True, cwd=clone, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output = []
    deadline = time.monotonic() + seconds
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            output.append(line)
            if ready in line or time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    assert any(ready in line for line in output), "".join(output)[-3000:]


def test_the_pages_have_commands():
    """A parser that found nothing would pass every other test here."""
    by_page = {c.page for c in COMMANDS}
    assert "README.md" in by_page and len(COMMANDS) > 10


def test_every_command_is_run_or_listed_with_a_reason():
    unrunnable = [f"{c.id}: {c.text!r} uses {sorted(unknown_placeholders(c.text))}"
                  for c in COMMANDS if unknown_placeholders(c.text) and not not_run_reason(c)]
    assert not unrunnable, "placeholders no test can fill:\n" + "\n".join(unrunnable)
    unused = [p for p in NOT_RUN if not any(re.search(p, c.text) for c in COMMANDS)]
    assert not unused, f"NOT_RUN entries that match no documented command: {unused}"


def test_the_two_reading_paths_name_real_pages():
    """A renamed page would silently move to the first path."""
    assert all((ROOT / page).is_file() for page in DATA_AND_INFERENCE)
    assert all(any(c.page == page for c in COMMANDS) for page in DATA_AND_INFERENCE)


@pytest.mark.slow
@pytest.mark.parametrize("command", TUTORIAL_COMMANDS, ids=lambda c: c.id)
def test_documented_command(command: DocCommand, clone: Path):
    run_documented(command, clone)


def run_documented(command: DocCommand, clone: Path) -> None:
    """Run one documented command in ``clone`` as written, with only the additions above."""
    reason = not_run_reason(command)
    if reason:
        pytest.skip(reason)
    if "\n" in command.text:  # a heredoc: a file the reader writes, as written
        line = fill(command.text, clone)
    else:
        line = fill(runnable_part(command.text), clone)
        if line.split()[0] in SERVERS:
            run_server(line, clone, SERVERS[line.split()[0]])
            return
        line = " ".join([line, *map(shlex.quote, budget(line))])
    done = subprocess.run(["bash", "-c", line], cwd=clone, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, (
        f"{command.id}: {line}\nexit {done.returncode}\n{done.stdout[-2000:]}\n"
        f"{done.stderr[-4000:]}")
