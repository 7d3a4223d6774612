"""The README's two commands are the ones CI runs and the ones that work."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f". .venv/bin/activate && {ci_command}" in readme


def test_readme_opens_with_train_then_test_command():
    blocks = (ROOT / "README.md").read_text().split("```bash\n")[1:3]
    train, test = (b.split("\n```")[0] for b in blocks)
    assert train.endswith("python train.py") and "pip install torch==2.13.0 -e ." in train
    assert test.endswith("pytest") and '-e ".[dev]"' in test
