"""The notebooks run top to bottom: executed with nbclient on the tests' small settings
(``VOLSEG_NOTEBOOK_FAST=1``, read by each notebook's first cell), in a temporary folder.
Any cell that raises fails the test; the committed notebooks carry no outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_compare_runs.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, shared_data_dir, monkeypatch):
    # The kernel inherits this environment: small settings, the session's synthetic data.
    monkeypatch.setenv("VOLSEG_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("VOLSEG_DATA_DIR", str(shared_data_dir))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = tmp_path / "outputs" / "train"
    assert list(outputs.rglob("metrics.json")), "the notebook trained nothing"
    if name.startswith("02"):
        assert list(outputs.rglob("leaderboard.md"))
