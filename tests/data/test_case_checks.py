"""`check_case`: a case read once, and what is wrong with it (the cache build's checks are
tested through the cache in tests/data/test_cache.py)."""

import numpy as np

from tests.data.test_cache import _Folder, _write
from volseg.data.case_checks import check_case


def test_check_case_returns_the_volumes_it_read(tmp_path):
    _write(tmp_path, "c1", np.ones((8, 8, 4), np.uint8))
    layout = _Folder(tmp_path)
    checked = check_case(layout, layout.list_cases()[0], num_classes=2, in_channels=1)
    assert checked.problems == []
    assert checked.image.array.shape == (1, 8, 8, 4) and checked.label.array.max() == 1
    wrong = check_case(layout, layout.list_cases()[0], num_classes=2, in_channels=2)
    assert [p.kind for p in wrong.problems] == ["channels"]
    assert "1 channel(s), data.in_channels=2" in wrong.problems[0].message
