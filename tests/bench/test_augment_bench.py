"""`volseg bench augment`: a tiny run gives one row per library."""

import pytest

from volseg.bench.__main__ import main


# TorchIO warns that 5 control points on a 40-voxel volume may fold; true and harmless here.
@pytest.mark.filterwarnings("ignore:The maximum displacement is larger")
def test_tiny_run_has_a_row_per_library(tmp_path, capsys):
    markdown = tmp_path / "augment.md"
    status = main(["augment", "--volume", "40,36,30", "--patch", "16,16,12", "--repeats", "1",
                   "--library-repeats", "1", "--device", "cpu", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"volseg", "MONAI", "TorchIO", "volseg, batch of 2 on cpu"} <= set(rows)
    for name in ("volseg", "MONAI", "TorchIO"):
        assert float(rows[name][3]) > 0, rows[name]  # patches/s, not a failure row
    assert "threads" in out and rows["volseg"][4].endswith("x")
    assert "| volseg |" in markdown.read_text(encoding="utf-8")


def test_patch_larger_than_volume_is_an_error(capsys):
    assert main(["augment", "--volume", "20,20,20", "--patch", "32,16,16"]) == 2
    assert "inside the volume" in capsys.readouterr().err
