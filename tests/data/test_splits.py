import json
import threading

import pytest

from volseg.data.splits import _create_once, load_or_make_splits, make_splits, select

CASES = [f"case_{i:02d}" for i in range(20)]
# conf/data/base.yaml's split settings, given in full as the data module gives them.
SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "folds": 5}
GROUPS = {case: f"patient_{i // 3}" for i, case in enumerate(CASES)}  # 7 patients


def _plain(splits):
    return [splits[name] for name in ("train", "val", "test")]


def test_fractions_disjoint_and_complete():
    splits = make_splits(CASES, val_fraction=0.2, test_fraction=0.1, seed=3, folds=5)
    assert [len(cases) for cases in _plain(splits)] == [14, 4, 2]
    assert sorted(sum(_plain(splits), [])) == CASES


def test_seed_changes_the_split_and_is_reproducible():
    assert make_splits(CASES, **SPLIT) == make_splits(CASES, **SPLIT)
    other_seed = make_splits(CASES, **(SPLIT | dict(seed=2)))
    assert make_splits(CASES, **SPLIT)["test"] != other_seed["test"]


def test_groups_never_straddle_splits():
    splits = make_splits(CASES, 0.25, 0.25, seed=0, groups=GROUPS, folds=5)
    where = {}
    for name, cases in zip(("train", "val", "test"), _plain(splits)):
        for case in cases:
            assert where.setdefault(GROUPS[case], name) == name


def test_tiny_dataset_still_validates_and_tests():
    splits = make_splits(CASES[:3], 0.1, 0.1, 0, folds=5)
    assert [len(cases) for cases in _plain(splits)] == [1, 1, 1]
    assert splits["folds"] == []  # two cases outside the test set: too few for 5 folds
    with pytest.raises(ValueError, match="too few"):
        make_splits(CASES[:2], 0.1, 0.1, 0, folds=5)


def test_bad_fractions_name_the_key():
    with pytest.raises(ValueError, match="data.split"):
        make_splits(CASES, 0.6, 0.5, 0, folds=5)


@pytest.mark.parametrize("groups", [None, GROUPS], ids=["cases", "patients"])
def test_folds_partition_the_non_test_cases_by_group(groups):
    splits = make_splits(CASES, 0.2, 0.2, seed=5, groups=groups, folds=3)
    folds = splits["folds"]
    assert len(folds) == 3 and all(folds)
    non_test = sorted(set(CASES) - set(splits["test"]))
    assert sorted(sum(folds, [])) == non_test  # disjoint (no case twice) and complete
    group_of = groups or {c: c for c in CASES}
    fold_of = {}
    for k, fold in enumerate(folds):
        for case in fold:
            assert fold_of.setdefault(group_of[case], k) == k  # a group is never split
    for k in range(3):
        chosen = select(splits, k)
        assert chosen["test"] == splits["test"]  # the same test set in every fold
        assert chosen["val"] == folds[k]
        assert sorted(chosen["train"] + chosen["val"]) == non_test
        assert not set(chosen["train"]) & set(chosen["val"])


def test_fold_sizes_differ_by_at_most_one_group():
    splits = make_splits(CASES, 0.2, 0.2, seed=0, folds=5)  # 16 non-test cases
    assert sorted(len(f) for f in splits["folds"]) == [3, 3, 3, 3, 4]


def test_fold_out_of_range_or_missing_names_the_key():
    splits = make_splits(CASES, 0.2, 0.2, 0, folds=5)
    with pytest.raises(ValueError, match=r"data.fold=5 is outside 0..4"):
        select(splits, 5)
    with pytest.raises(ValueError, match="data.fold=0 but the splits hold no folds"):
        select(make_splits(CASES[:4], 0.25, 0.25, 0, folds=5), 0)
    with pytest.raises(ValueError, match="hold 5 folds but data.split.folds=3"):
        select(splits, 0, folds=3)


def _rare_class(case_ids, holders):
    # Class 1 everywhere, class 2 only in `holders`.
    return {c: [1, 2] if c in holders else [1] for c in case_ids}


@pytest.mark.parametrize("seed", range(8))
def test_stratification_keeps_a_rare_class_in_every_split(seed):
    classes = _rare_class(CASES, {"case_03", "case_11", "case_17"})
    splits = make_splits(CASES, 0.2, 0.2, seed=seed, classes=classes, folds=0)
    for cases in _plain(splits):
        assert sum(2 in classes[c] for c in cases) == 1
    assert [len(cases) for cases in _plain(splits)] == [12, 4, 4]  # sizes as without


def test_stratification_reaches_every_fold_and_is_needed():
    holders = {"case_00", "case_04", "case_08", "case_12", "case_16", "case_19"}
    classes = _rare_class(CASES, holders)
    for seed in range(8):
        splits = make_splits(CASES, 0.2, 0.2, seed=seed, classes=classes, folds=5)
        assert sum(c in holders for c in splits["test"]) == 1
        assert all(any(c in holders for c in fold) for fold in splits["folds"])
    # Without stratification some seed leaves a split without the rare class, so the test
    # above checks something.
    misses = 0
    for seed in range(8):
        plain = make_splits(CASES, 0.2, 0.2, seed=seed, folds=5)
        misses += not all(any(c in holders for c in f) for f in [plain["test"], *plain["folds"]])
    assert misses > 0


def test_stratification_respects_groups():
    rare_patients = {"patient_0", "patient_3", "patient_6"}
    classes = _rare_class(CASES, {c for c in CASES if GROUPS[c] in rare_patients})
    splits = make_splits(CASES, 0.2, 0.2, seed=0, groups=GROUPS, classes=classes, folds=3)
    parts = [splits["test"], *splits["folds"]]
    patients = [{GROUPS[c] for c in part} for part in parts]
    assert sum(len(p) for p in patients) == 7  # no patient in two parts
    assert [len(p & rare_patients) for p in patients].count(1) == 3  # one each, none doubled


def test_saved_splits_are_reused_and_checked(tmp_path):
    path = tmp_path / "splits.json"
    first = load_or_make_splits(path, CASES, **(SPLIT | dict(seed=0)))
    assert json.loads(path.read_text()) == first
    # Reused, not remade:
    assert load_or_make_splits(path, CASES, **(SPLIT | dict(seed=99))) == first
    with pytest.raises(ValueError, match="splits.json: names cases not in the dataset"):
        load_or_make_splits(path, CASES[:10], **SPLIT)


def test_excluded_cases_may_be_named_and_are_dropped(tmp_path):
    path = tmp_path / "splits.json"
    full = load_or_make_splits(path, CASES, **SPLIT)
    gone = full["test"][0]
    kept = load_or_make_splits(path, [c for c in CASES if c != gone], excluded={gone}, **SPLIT)
    assert gone not in kept["test"] and gone not in sum(kept["folds"], [])
    assert kept["train"] == full["train"]


def test_old_format_file_loads_and_gets_folds_from_its_train_and_val(tmp_path):
    path = tmp_path / "splits.json"
    old = {"train": CASES[:12], "val": CASES[12:16], "test": CASES[16:]}
    path.write_text(json.dumps(old))
    splits = load_or_make_splits(path, CASES, **(SPLIT | dict(seed=0, folds=4)))
    assert select(splits) == old
    assert sorted(sum(splits["folds"], [])) == CASES[:16]
    assert select(splits, 2)["test"] == old["test"]
    # The same in every job:
    assert load_or_make_splits(path, CASES, **(SPLIT | dict(seed=0, folds=4))) == splits
    assert json.loads(path.read_text()) == old  # the file itself is left as it was


def test_first_writer_wins_and_everyone_reads_its_file(tmp_path):
    path = tmp_path / "splits.json"
    first = make_splits(CASES, 0.2, 0.2, seed=1, folds=5)
    assert _create_once(first, path) == first
    # The loser reads the winner:
    assert _create_once(make_splits(CASES, 0.2, 0.2, seed=2, folds=5), path) == first
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_concurrent_creation_ends_with_one_consistent_file(tmp_path):
    path = tmp_path / "sub" / "splits.json"
    start = threading.Barrier(8)
    results = [None] * 8

    def job(index):
        start.wait()
        # Different seeds make different splits: only one of them may end up used by all.
        results[index] = load_or_make_splits(path, CASES, **(SPLIT | dict(seed=index)))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    on_disk = json.loads(path.read_text())
    assert all(result == on_disk for result in results)
