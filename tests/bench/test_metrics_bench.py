"""`volseg bench metrics`: one small run, values agree across tools, bad tools refused."""

import pytest

from volseg.bench.__main__ import main


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("metric", "---"):
            rows[(cells[0], cells[1])] = cells
    return rows


def test_small_run_agrees_with_monai_and_simpleitk(tmp_path, capsys) -> None:
    markdown = tmp_path / "bench.md"
    status = main(["metrics", "--shape", "40", "36", "24", "--repeats", "1",
                   "--tools", "volseg,MONAI,SimpleITK", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    rows = _rows(out)
    for metric in ("HD95", "HD", "ASSD", "NSD@2mm"):
        ours = float(rows[(metric, "volseg")][2])
        assert ours == pytest.approx(float(rows[(metric, "MONAI")][2]), abs=1e-4), metric
    assert float(rows[("HD", "volseg")][2]) == pytest.approx(
        float(rows[("HD", "SimpleITK")][2]), abs=1e-4)
    assert float(rows[("HD", "volseg")][2]) >= float(rows[("HD95", "volseg")][2])
    assert "CPU:" in out
    assert "| HD95 | MONAI |" in markdown.read_text(encoding="utf-8")


def test_unknown_tool_is_an_error(capsys) -> None:
    assert main(["metrics", "--tools", "volseg,plastimatch"]) == 2
    assert "plastimatch" in capsys.readouterr().err
