import json

import pytest

from volseg.data.splits import load_or_make_split, make_split

CASES = [f"case_{i:02d}" for i in range(20)]


def test_fractions_disjoint_and_complete():
    split = make_split(CASES, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (14, 4, 2)
    assert sorted(sum(split.values(), [])) == CASES


def test_seed_changes_the_split_and_is_reproducible():
    assert make_split(CASES, seed=1) == make_split(CASES, seed=1)
    assert make_split(CASES, seed=1) != make_split(CASES, seed=2)


def test_groups_never_straddle_splits():
    groups = {case: f"patient_{i // 3}" for i, case in enumerate(CASES)}
    split = make_split(CASES, 0.25, 0.25, seed=0, groups=groups)
    where = {groups[c]: name for name, cases in split.items() for c in cases}
    for name, cases in split.items():
        assert all(where[groups[c]] == name for c in cases)


def test_tiny_dataset_still_validates_and_tests():
    split = make_split(CASES[:3], 0.1, 0.1)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(ValueError, match="too few"):
        make_split(CASES[:2], 0.1, 0.1)


def test_saved_split_is_reused_and_checked(tmp_path):
    path = tmp_path / "splits.json"
    first = load_or_make_split(path, CASES, seed=0)
    assert json.loads(path.read_text()) == first
    assert load_or_make_split(path, CASES, seed=99) == first  # reused, not remade
    with pytest.raises(ValueError, match="splits.json: names cases not in the dataset"):
        load_or_make_split(path, CASES[:10])


def test_bad_fractions_name_the_key():
    with pytest.raises(ValueError, match="data.split"):
        make_split(CASES, 0.6, 0.5)
