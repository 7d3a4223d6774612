"""What the wheel carries: every package, the configs as ``volseg.conf``, the sweeper plugin.

.ci/run builds the wheel and uses it from an empty folder; these checks say which piece is
missing before that.
"""

from pathlib import Path

import pytest

from volseg.runs.compose import CONFIG_PATH, builtin_config_dir

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and newer

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_source_tree_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("volseg/**/__init__.py")}
    found |= {"volseg.conf"} | {".".join(p.parent.relative_to(ROOT).parts)
                                for p in ROOT.glob("hydra_plugins/*/__init__.py")}
    assert listed == found


def test_conf_installs_as_volseg_conf_with_its_yaml_files():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"volseg.conf": "conf"}
    assert setuptools["package-data"]["volseg.conf"] == ["**/*.yaml"]
    assert CONFIG_PATH == "pkg://volseg.conf"
    # Installed editable here, the package is the checkout's conf/ folder itself.
    assert builtin_config_dir().resolve() == (ROOT / "conf").resolve()
    assert (builtin_config_dir() / "train.yaml").is_file()


def test_the_volseg_command_is_a_console_script():
    assert PYPROJECT["project"]["scripts"] == {"volseg": "volseg.cli:main"}
