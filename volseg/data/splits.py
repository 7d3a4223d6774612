"""Test set, train/validation split and cross-validation folds, by patient, seeded, saved once.

The splits are made once and written to ``splits.json``; every later run (every job of a sweep,
every fold of a cross-validation, every resumed run) reads the same file, so a model is never
tested on a case it trained on. The file holds::

    {"train": [...], "val": [...], "test": [...],   # the plain split (data.fold=null)
     "folds": [[...], [...], ...],                  # validation cases of fold 0, 1, ...
     "settings": {...}}                             # what it was made with

As in nnU-Net, the test set is held out first; the remaining cases are cut once into the plain
train/val split and once into ``folds`` folds; fold ``k`` validates on ``folds[k]`` and trains
on the other folds. Cases of one group (a patient's several scans) always land together.

Stratification (``stratify``): each group is labelled with the set of foreground classes
present in its cases. Groups are then placed class by class, rarest class first (iterative
stratification, Sechidis et al. 2011): a group goes to the split that has no group with that
class yet, else to the one furthest below its share of that class, else to the one with the
most room left. So a class present in at least as many groups as there are splits reaches
every split, and the others spread in proportion to the split sizes. Split sizes (in groups)
are the same as without stratification.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test")

log = logging.getLogger(__name__)


def make_splits(
    case_ids: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Mapping[str, str] | None = None,
    *,
    folds: int,
    classes: Mapping[str, Iterable[int]] | None = None,
) -> dict:
    """The content of ``splits.json``: test set, plain train/val split and ``folds`` folds.

    Args:
        val_fraction: share of the groups in the plain split's validation set.
        test_fraction: share of the groups held out for testing.
        groups: case -> group (patient); a case without one is its own group.
        folds: cross-validation folds of the non-test groups; fewer than 2 makes none, and so
            does having fewer non-test groups than folds.
        classes: case -> foreground classes present, to stratify on (``None``: no
            stratification).

    Each non-zero fraction gets at least one group, so a tiny dataset still validates.

    Raises:
        ValueError: fractions outside [0, 1) or too few groups to honour them.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"data.split fractions must be in [0, 1) and sum below 1, got "
            f"val={val_fraction} test={test_fraction}"
        )
    members = _members(case_ids, groups)
    labels = _group_labels(members, classes)
    order = _shuffled(members, seed)

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, round(fraction * len(order)))

    n_val, n_test = count(val_fraction), count(test_fraction)
    if n_val + n_test >= len(order):
        raise ValueError(
            f"{len(order)} cases/groups are too few for val={val_fraction}, test={test_fraction}"
        )
    held_out = _assign(order, {"test": n_test, "rest": len(order) - n_test}, labels)
    rest = held_out["rest"]
    plain = _assign(rest, {"val": n_val, "train": len(rest) - n_val}, labels)
    return {
        "train": _cases(plain["train"], members),
        "val": _cases(plain["val"], members),
        "test": _cases(held_out["test"], members),
        "folds": _folds(rest, folds, labels, members),
        "settings": {"val": val_fraction, "test": test_fraction, "seed": seed, "folds": folds,
                     "stratify": classes is not None},
    }


def _members(case_ids: Sequence[str], groups: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Group -> its cases, groups sorted by name (the seeded shuffle needs a fixed start)."""
    groups = groups or {}
    members: dict[str, list[str]] = {}
    for case in sorted(case_ids):
        members.setdefault(groups.get(case) or case, []).append(case)
    return dict(sorted(members.items()))


def _shuffled(members: Mapping[str, list[str]], seed: int) -> list[str]:
    names = list(members)
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


def _group_labels(
    members: Mapping[str, list[str]], classes: Mapping[str, Iterable[int]] | None
) -> dict[str, frozenset[int]]:
    classes = classes or {}
    return {g: frozenset(c for case in cases for c in classes.get(case, ())) for g, cases in
            members.items()}


def _cases(group_names: Iterable[str], members: Mapping[str, list[str]]) -> list[str]:
    return sorted(case for g in group_names for case in members[g])


def _folds(
    groups: Sequence[str], folds: int, labels: Mapping[str, frozenset[int]],
    members: Mapping[str, list[str]],
) -> list[list[str]]:
    if folds < 2 or len(groups) < folds:
        return []
    sizes = {k: len(groups) // folds + (k < len(groups) % folds) for k in range(folds)}
    assigned = _assign(groups, sizes, labels)
    return [_cases(assigned[k], members) for k in range(folds)]


def _assign(
    order: Sequence[str], sizes: Mapping[Hashable, int], labels: Mapping[str, frozenset[int]]
) -> dict[Hashable, list[str]]:
    """Place the groups of ``order`` into bins of exactly ``sizes`` groups (see the module doc).

    Without labels every group goes to the bin with the most room left, in ``order``: a random
    partition when ``order`` is shuffled.
    """
    room = dict(sizes)
    placed: dict[Hashable, list[str]] = {b: [] for b in sizes}
    have: dict[Hashable, Counter] = {b: Counter() for b in sizes}
    share = {b: n / max(len(order), 1) for b, n in sizes.items()}
    total = Counter(c for g in order for c in labels[g])

    def score(b: Hashable, cls: int | None) -> tuple:
        if cls is None:
            return (room[b],)
        return (have[b][cls] == 0, total[cls] * share[b] - have[b][cls], room[b])

    pending = list(order)
    while pending:
        counts = Counter(c for g in pending for c in labels[g])
        rarest = min(counts, key=lambda c: (counts[c], c)) if counts else None
        batch = [g for g in pending if rarest is None or rarest in labels[g]]
        for group in batch:
            scores = {b: score(b, rarest) for b in sizes if room[b] > 0}
            best = max(scores, key=scores.__getitem__)  # ties: the first bin
            placed[best].append(group)
            room[best] -= 1
            have[best].update(labels[group])
        chosen = set(batch)
        pending = [g for g in pending if g not in chosen]
    return placed


def select(
    splits: Mapping, fold: int | None = None, folds: int | None = None
) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` case lists of the plain split, or of cross-validation ``fold``.

    Args:
        folds: the number of folds the caller expects the splits to hold (``None``: any).

    Raises:
        ValueError: ``fold`` is out of range, or the splits hold no folds, or not ``folds``.
    """
    if fold is None:
        return {name: list(splits.get(name, [])) for name in SPLIT_NAMES}
    saved = splits.get("folds") or []
    if not saved:
        raise ValueError(
            f"data.fold={fold} but the splits hold no folds: the cases outside the test set "
            "are fewer than data.split.folds (or data.split.folds < 2)"
        )
    if folds is not None and len(saved) != folds:
        raise ValueError(
            f"data.fold={fold}: the saved splits hold {len(saved)} folds but "
            f"data.split.folds={folds}; delete the splits file to make new folds"
        )
    if not 0 <= fold < len(saved):
        raise ValueError(f"data.fold={fold} is outside 0..{len(saved) - 1} "
                         f"({len(saved)} folds)")
    train = sorted(case for k, cases in enumerate(saved) if k != fold for case in cases)
    return {"train": train, "val": list(saved[fold]), "test": list(splits.get("test", []))}


def load_or_make_splits(
    path: str | Path,
    case_ids: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int,
    groups: Mapping[str, str] | None = None,
    classes: Mapping[str, Iterable[int]] | None = None,
    excluded: Collection[str] = (),
) -> dict:
    """Read ``path`` if it exists, else make the splits (`make_splits`) and write them there.

    Several processes may call this at once (the jobs of a fold sweep): the file is created
    only if absent, in one step, and every process returns what the file holds.

    A file from an older volseg (only ``train``/``val``/``test``) is read as it is and left
    unchanged; its folds are made from its train and val cases with ``seed``, the same in every
    job that reads it.

    Args:
        excluded: cases the file may name although they are not in ``case_ids`` (cases left out
            as bad); they are removed from what is returned.

    Raises:
        ValueError: the saved splits name cases that the dataset no longer has.
    """
    path = Path(path)
    arguments = (val_fraction, test_fraction, seed, groups, folds, classes)
    if path.is_file():
        splits = json.loads(path.read_text())
    else:
        splits = _create_once(make_splits(case_ids, val_fraction, test_fraction, seed, groups,
                                          folds=folds, classes=classes), path)
    _check_cases(path, splits, case_ids, excluded)
    if "folds" not in splits:  # written before folds existed
        splits = {**splits, "folds": _folds_of_old(splits, seed, groups, folds, classes)}
    _warn_if_settings_differ(path, splits, arguments)
    drop = set(excluded)

    def kept(cases: Iterable[str]) -> list[str]:
        return [c for c in cases if c not in drop]

    result = dict(splits)
    result.update({name: kept(splits.get(name, [])) for name in SPLIT_NAMES})
    result["folds"] = [kept(fold) for fold in splits["folds"]]
    return result


def _folds_of_old(
    splits: Mapping, seed: int, groups: Mapping[str, str] | None, folds: int,
    classes: Mapping[str, Iterable[int]] | None,
) -> list[list[str]]:
    members = _members([*splits.get("train", []), *splits.get("val", [])], groups)
    return _folds(_shuffled(members, seed), folds, _group_labels(members, classes), members)


def _check_cases(
    path: Path, splits: Mapping, case_ids: Sequence[str], excluded: Collection[str]
) -> None:
    named = set().union(*(splits.get(n, []) for n in SPLIT_NAMES),
                        *(splits.get("folds") or []))
    known = set(case_ids) | set(excluded)
    missing = sorted(named - known)
    if missing:
        raise ValueError(
            f"{path}: names cases not in the dataset ({', '.join(missing[:5])}); "
            "delete it to make a new split"
        )
    unused = len(set(case_ids) - named)
    if unused:
        log.warning("%s: %d case(s) of the dataset are in no split (added since it was made); "
                    "delete it to make a new split that uses them", path, unused)


def _warn_if_settings_differ(path: Path, splits: Mapping, arguments: tuple) -> None:
    saved = splits.get("settings")
    val, test, seed, _, folds, classes = arguments
    wanted = {"val": val, "test": test, "seed": seed, "folds": folds,
              "stratify": classes is not None}
    if saved is not None and saved != wanted:
        changed = ", ".join(f"{k}: {saved.get(k)} -> {v}" for k, v in wanted.items()
                            if saved.get(k) != v)
        log.warning("%s was made with other data.split settings (%s); it is used as it is. "
                    "Delete it to make new splits.", path, changed)


def _create_once(splits: dict, path: Path) -> dict:
    """Write ``splits`` to ``path`` unless it exists; return what ``path`` then holds.

    The content goes to a private temporary file that is then hard-linked to ``path``: the link
    fails when ``path`` exists, so of several processes exactly one creates it, complete, and
    the others read the winner's file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(splits, indent=2) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: rename, the last writer wins; reading the file
            # back below still makes this process use what is on disk.
            os.replace(tmp, path)
        return json.loads(path.read_text())
    finally:
        tmp.unlink(missing_ok=True)
