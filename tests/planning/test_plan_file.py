"""Plan files: written atomically, and found by path on the command line."""

import pytest
from hydra.core.config_store import ConfigStore

from volseg.planning.plan_file import register_plan_files, write_plan_file


def test_written_with_its_header_and_found_by_path(tmp_path):
    path = write_plan_file(tmp_path / "plans" / "mine.yaml",
                           {"defaults": [{"override /model": "dynamic_unet"}],
                            "data": {"batch_size": 3}}, "made by hand")
    text = path.read_text()
    assert text.startswith("# @package _global_\n# made by hand\n")
    assert f"# Train with: volseg train plan={path}" in text
    assert not list(path.parent.glob(".*partial*"))  # no temporary file left

    other = write_plan_file(tmp_path / "other.yml", {"data": {"batch_size": 4}}, "another")
    overrides = register_plan_files(["loss=dice", f"plan={path},{other}", "plan.x=1"])
    assert overrides[0] == "loss=dice" and overrides[2] == "plan.x=1"
    names = overrides[1].removeprefix("plan=").split(",")
    stored = ConfigStore.instance().repo["plan"]
    first = stored[f"{names[0]}.yaml"].node
    assert first.data.batch_size == 3 and first.plan.file == str(path.resolve())
    assert stored[f"{names[1]}.yaml"].node.data.batch_size == 4


def test_missing_or_malformed_plan_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="plan=nowhere.yaml: no such plan file"):
        register_plan_files(["plan=nowhere.yaml"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="a plan file is a YAML mapping"):
        register_plan_files([f"plan={listed}"])
    assert register_plan_files(["plan=my_named_plan"]) == ["plan=my_named_plan"]
