"""`volseg bench infer`: one tiny run; volseg agrees with MONAI's sliding window."""

import pytest

from volseg.bench.__main__ import main


@pytest.mark.slow
def test_tiny_run_agrees_with_monai(tmp_path, capsys) -> None:
    pytest.importorskip("monai")
    markdown = tmp_path / "infer.md"
    status = main(["infer", "--size", "40", "32", "32", "--tile", "32", "32", "16",
                   "--features", "4", "--repeats", "1", "--rounds", "1",
                   "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| mode"))}
    assert set(rows) == {"monai", "volseg", "fast"}
    # Same tile layout and weights; only float32 summation order differs.
    assert float(rows["volseg"][6]) <= 1e-4
    assert rows["fast"][1] == "40x32x32"  # twice the tile, at most the volume
    assert 0 <= float(rows["fast"][7]) <= 1
    assert "Sliding-window inference benchmark" in markdown.read_text()
