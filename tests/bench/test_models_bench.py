"""`volseg bench models`: the table, the Markdown file and the model config loader."""

import re

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, compose_config
from volseg.bench.__main__ import main
from volseg.bench.models import model_config


def _parameters_independently(tmp_path) -> int:
    # The real Hydra composition, not the bench's own loader.
    cfg = compose_config("train", tmp_path, ["model=unet3d_small", "data.in_channels=1",
                                             "data.num_classes=3",
                                             "data.class_names=[a,b,c]"])
    return sum(p.numel() for p in instantiate(cfg.model).parameters())


def test_models_table_row_has_parameter_count(tmp_path, capsys):
    expected = _parameters_independently(tmp_path)
    markdown = tmp_path / "docs" / "models.md"
    status = main(["models", "--size", "16", "--repeats", "1", "--device", "cpu",
                   "--configs", "unet3d_small", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert status == 0
    rows = [line for line in out.splitlines() if line.startswith("| unet3d_small |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == f"{expected:,}"
    assert re.fullmatch(r"\d+\.\d{3}", cells[4]), cells  # a time was measured
    assert "torch" in out and "threads" in out  # the machine line
    assert rows[0] in markdown.read_text(encoding="utf-8")


def test_unknown_config_is_an_error(capsys):
    assert main(["models", "--configs", "unet4d"]) == 2
    assert "unet4d" in capsys.readouterr().err


def test_size_not_divisible_is_noted_not_timed(capsys):
    # unet3d_small pools twice: sizes must be multiples of 4.
    assert main(["models", "--size", "6", "--repeats", "1", "--configs", "unet3d_small",
                 "--no-isolate"]) == 0
    out = capsys.readouterr().out
    assert "not a multiple of its divisor 4" in out


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_loader_matches_hydra_composition(name, tmp_path):
    cfg = compose_config("train", tmp_path, [f"model={name}"])
    expected = {k: v for k, v in cfg.model.items()}
    expected.update(in_channels=2, out_channels=5)
    assert model_config(CONF_DIR / "model" / f"{name}.yaml", 2, 5) == expected
