"""`volseg bench predict`: one tiny run of the whole volseg predict, timed and measured."""

import ast

import pytest

from volseg.bench.__main__ import main


@pytest.mark.slow
def test_tiny_run_writes_a_label_map_on_the_input_grid(tmp_path, capsys) -> None:
    markdown = tmp_path / "predict.md"
    status = main(["predict", "--size", "40", "36", "20", "--spacing", "0.7", "0.7", "1.25",
                   "--model-spacing", "1.0", "1.0", "1.5", "--classes", "3",
                   "--tile", "16", "16", "16", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    row = [c.strip() for line in out.splitlines() if line.startswith("| 40x36x20")
           for c in line.strip("|").split("|")]
    assert row[1] == "0.0 M"  # 28,800 voxels
    assert float(row[4]) > 0.1  # a real process's peak RSS, in GiB
    assert row[6] == "uint8"
    assert set(ast.literal_eval(row[7])) <= {0, 1, 2}
    assert row[8] == "yes"  # resampled to 1.0 x 1.0 x 1.5 mm and back onto the input grid
    assert "Predicting a large CT" in markdown.read_text()
