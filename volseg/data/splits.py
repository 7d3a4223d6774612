"""Train/validation/test splits by case (or by patient group), seeded, saved and reused.

A split is made once and written to ``splits.json``; every later run (every job of a sweep,
every resumed run) reads the same file, so a model is never tested on a case it trained on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from volseg.atomic import write_json

SPLIT_NAMES = ("train", "val", "test")


def make_split(
    case_ids: Sequence[str],
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Shuffle the groups (cases, or patients) with ``seed`` and cut them by the fractions.

    Each non-zero fraction gets at least one group, so a tiny dataset still validates.

    Raises:
        ValueError: fractions outside [0, 1) or too few groups to honour them.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"data.split fractions must be in [0, 1) and sum below 1, got "
            f"val={val_fraction} test={test_fraction}"
        )
    groups = groups or {}
    group_of = {case: groups.get(case, case) for case in case_ids}
    unique = sorted(set(group_of.values()))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, round(fraction * len(unique)))

    n_val, n_test = count(val_fraction), count(test_fraction)
    if n_val + n_test >= len(unique):
        raise ValueError(
            f"{len(unique)} cases/groups are too few for val={val_fraction}, test={test_fraction}"
        )
    assignment = {g: "val" for g in shuffled[:n_val]}
    assignment.update({g: "test" for g in shuffled[n_val : n_val + n_test]})
    split: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for case in sorted(case_ids):
        split[assignment.get(group_of[case], "train")].append(case)
    return split


def load_or_make_split(
    path: str | Path,
    case_ids: Sequence[str],
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Read ``path`` if it exists, else make the split and write it there.

    Raises:
        ValueError: the saved split names cases that the dataset no longer has.
    """
    path = Path(path)
    if path.is_file():
        split = json.loads(path.read_text())
        missing = sorted(set().union(*map(set, split.values())) - set(case_ids))
        if missing:
            raise ValueError(
                f"{path}: names cases not in the dataset ({', '.join(missing[:5])}); "
                "delete it to make a new split"
            )
        return {name: list(split.get(name, [])) for name in SPLIT_NAMES}
    split = make_split(case_ids, val_fraction, test_fraction, seed, groups)
    write_json(split, path)
    return split
