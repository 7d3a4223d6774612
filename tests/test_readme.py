"""The README's two commands are the ones CI runs and the ones that work."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI = (ROOT / ".ci" / "run").read_text().splitlines()


def readme_opening_commands() -> tuple[str, str]:
    blocks = (ROOT / "README.md").read_text().split("```bash\n")[1:3]
    train, test = (b.split("\n```")[0] for b in blocks)
    return train, test


def test_ci_runs_the_readme_test_command():
    _, test = readme_opening_commands()
    (marker,) = [i for i, line in enumerate(CI) if line.startswith("# The README's test command")]
    assert test == f"python3 -m venv .venv && . .venv/bin/activate && {CI[marker + 1]}"
    # The environment part: the venv and activation lines that come before it.
    assert "python3 -m venv .venv" in CI and ". .venv/bin/activate" in CI


def test_readme_opens_with_train_then_test_command():
    train, test = readme_opening_commands()
    assert train == ("python3 -m venv .venv && . .venv/bin/activate && "
                     "pip install torch==2.13.0 -e . && volseg train")
    assert test.endswith("&& pytest") and '-e ".[dev]"' in test


def test_ci_also_uses_the_wheel_from_an_empty_folder_and_on_the_newest_dependencies():
    assert CI[-2:] == [".ci/wheel", ".ci/latest"]
    latest = (ROOT / ".ci" / "latest").read_text()
    assert "--upgrade --upgrade-strategy eager" in latest and "tests/sweep" in latest
    wheel = (ROOT / ".ci" / "wheel").read_text()
    for command in ("volseg train ", "volseg train -m loss=", "hparams_search=optuna",
                    "volseg predict ", "volseg evaluate ", "volseg report "):
        assert command in wheel
