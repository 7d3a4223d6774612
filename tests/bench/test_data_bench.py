"""`volseg bench data`: a tiny run gives one table row per dataset size."""

import pytest

from volseg.bench.__main__ import main
from volseg.bench.data import subset, write_dataset
from volseg.io import read_volume


def test_generated_cases_have_every_class(tmp_path):
    root = write_dataset(tmp_path / "source", 2, (24, 20, 16))
    label = read_volume(root / "labelsTr" / "case_001.nii").array
    assert label.shape == (24, 20, 16) and set(label.ravel().tolist()) == {0, 1, 2}
    small = subset(root, tmp_path / "one", 1)
    assert sorted(p.name for p in (small / "imagesTr").iterdir()) == ["case_000_0000.nii"]


@pytest.mark.slow
def test_tiny_run_has_a_row_per_dataset_size(tmp_path, capsys):
    markdown = tmp_path / "data.md"
    status = main(["data", "--cases", "3,4", "--size", "24,24,16", "--patch", "16,16,8",
                   "--batches", "2", "--workers", "0", "--folder", str(tmp_path / "work"),
                   "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert set(rows) == {"3", "4"}
    for row in rows.values():
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] == "—"  # no parallel build with --workers 0
        assert float(cells[6].replace(",", "")) > 0  # RSS after the batches was measured
    assert "torch" in out and "threads" in out  # the machine line
    assert rows["4"] in markdown.read_text(encoding="utf-8")


def test_too_few_cases_is_an_error(tmp_path, capsys):
    assert main(["data", "--cases", "2,4", "--folder", str(tmp_path)]) == 2
    assert "at least 3" in capsys.readouterr().err
