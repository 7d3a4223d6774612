import json

import pytest

from volseg.io.atomic import atomic_path, write_json


def test_temporary_name_keeps_compound_suffix(tmp_path):
    with atomic_path(tmp_path / "case.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".case.partial-")
        tmp.write_text("x")
    assert (tmp_path / "case.nii.gz").read_text() == "x"


def test_failure_keeps_the_old_file(tmp_path):
    write_json({"a": 1}, tmp_path / "m.json")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.json") as tmp:
        tmp.write_text("{half")
        raise RuntimeError
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
