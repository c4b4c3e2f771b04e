"""K-fold cross-validation: a dataset's tracks pooled and cut into K label-stratified folds that
deal whole groups (artists, `finetune.data.groups`), so no artist is on both sides of a split.

Fold `i` is the test split, fold `i + 1` (mod K) the validation split, the other K - 2 folds the
training split, so every track is tested exactly once and validates exactly once over the K runs.
The folds depend only on the tracks (ids, labels, groups) and K, never on the recipe seed: runs with
other seeds or other models see the same folds, which makes their per-track results paired. With
every track its own group (data.group_by=none, or data that knows no artists) they are the plain
stratified folds of earlier versions, track for track.

A class whose tracks fall in too few groups (all by one artist) is, in some fold, tested without a
training track of its own: `unsplittable_classes` finds such classes before any training, and
data.unsplittable says what to do (`UNSPLITTABLE`): refuse, leave them out of the test splits, or
deal them by track with the leak stated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.common import SPLITS, group_members, task_of

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import Dataset, DatasetDict

logger = logging.getLogger("finetune.data")

FOLD_SEED = 0  # fixed: the folds are a property of the data, not of a run
UNSPLITTABLE = ("refuse", "leave_out", "leak")  # recipe data.unsplittable


class UnsplittableClasses(ValueError):
    """Classes that some fold would test without a training track of theirs (one line, naming them
    and the other data.unsplittable choices)."""


def stratification_keys(split) -> np.ndarray:
    """(N,) the class of each track; for tagging, its rarest tag (so rare tags spread over folds;
    a track with no tag gets -1)."""
    if "label" in split.features:
        return np.asarray(split["label"], dtype=np.int64)
    tags = split["labels"]
    counts = np.bincount([t for row in tags for t in row], minlength=len(split.features["labels"].feature.names))
    return np.asarray([min(row, key=lambda t: (counts[t], t)) if row else -1 for row in tags], dtype=np.int64)


def _unit_class(classes: np.ndarray, totals: np.ndarray) -> int:
    """The class a group is dealt under: its most common, ties to the rarer overall, then the first."""
    counts = np.bincount(classes, minlength=len(totals))
    present = np.flatnonzero(counts)
    return int(min(present, key=lambda c: (-counts[c], totals[c], c)))


def assign_folds(
    ids: Sequence[str], keys: np.ndarray, folds: int, groups: Sequence[str] | None = None, seed: int = FOLD_SEED
) -> np.ndarray:
    """(N,) fold of each track, whole `groups` (aligned with `ids`; None: each track its own) to one
    fold. Class by class (`keys`), its groups in a seeded random order, largest first, each go to the
    fold holding the fewest tracks of their classes (relative to each class's total), then the
    smallest fold, then the fold after the last one dealt. With every track its own group this deals
    each class's tracks to the folds in turn, continuing where the previous class stopped: every
    fold gets floor(n_c / K) or ceil(n_c / K) tracks of each class and sizes differ by at most one."""
    if len(set(ids)) != len(ids):
        raise ValueError("cross-validation needs distinct track ids")
    index = {track: k for k, track in enumerate(ids)}
    units = [
        np.array([index[t] for t in unit])
        for unit in group_members(ids, None if groups is None else dict(zip(ids, groups)))
    ]
    _, classes = np.unique(keys, return_inverse=True)
    totals = np.bincount(classes)
    by_class = [[] for _ in totals]
    for unit in units:  # in the order of their first ids
        by_class[_unit_class(classes[unit], totals)].append(unit)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(ids), dtype=np.int64)
    counts, sizes, after = np.zeros((folds, len(totals))), np.zeros(folds), 0
    for class_units in by_class:
        shuffled = [class_units[k] for k in rng.permutation(len(class_units))]
        for unit in sorted(shuffled, key=len, reverse=True):  # stable: equal sizes keep the seeded order
            vector = np.bincount(classes[unit], minlength=len(totals))
            cost = (counts * (vector / totals)).sum(axis=1)
            chosen = min(range(folds), key=lambda f: (cost[f], sizes[f], (f - after) % folds))
            fold[unit], after = chosen, (chosen + 1) % folds
            counts[chosen] += vector
            sizes[chosen] += len(unit)
    return fold


def _presence(split) -> np.ndarray:
    """(N, C) bool: which classes (tags) each track has."""
    names, multi_label = task_of(split)
    present = np.zeros((len(split), len(names)), dtype=bool)
    for row, targets in enumerate(split["labels" if multi_label else "label"]):
        present[row, targets] = True
    return present


def _groups(split) -> list[str]:
    """The group of each track (its id where the split has no group column)."""
    return list(split["group" if "group" in split.column_names else "id"])


def _deal(pooled: Dataset, folds: int, by_track: np.ndarray) -> np.ndarray:
    """(N,) fold of each pooled track; tracks marked in `by_track` are dealt as their own groups."""
    ids = list(pooled["id"])
    groups = [track if own else group for track, group, own in zip(ids, _groups(pooled), by_track)]
    return assign_folds(ids, stratification_keys(pooled), folds, groups)


def _stranded(present: np.ndarray, of: np.ndarray, folds: int) -> np.ndarray:
    """(C,) bool: classes that some fold tests while none of its training tracks has them."""
    stranded = np.zeros(present.shape[1], dtype=bool)
    for fold in range(folds):
        train = (of != fold) & (of != (fold + 1) % folds)
        stranded |= present[of == fold].any(axis=0) & ~present[train].any(axis=0)
    return stranded


def _pool(dataset: DatasetDict) -> Dataset:
    """Every track of the dataset's splits, in split order."""
    from datasets import concatenate_datasets  # here, not above: checking a recipe imports this module

    return concatenate_datasets([dataset[name] for name in SPLITS if name in dataset])


def unsplittable_classes(dataset: DatasetDict, folds: int) -> list[str]:
    """Classes (tags) that the group-aware `folds`-fold deal tests in some fold without a training
    track of theirs: all their tracks by one artist, or by too few. Data only: call it before any run."""
    pooled = _pool(dataset)
    names, _ = task_of(pooled)
    of = _deal(pooled, folds, np.zeros(len(pooled), dtype=bool))
    return [names[c] for c in np.flatnonzero(_stranded(_presence(pooled), of, folds))]


def _refusal(folds: int, names: list[str], why: str, choices: str) -> UnsplittableClasses:
    return UnsplittableClasses(
        f"data.folds={folds}: class(es) {', '.join(names)} would be tested in some fold without a training "
        f"track of theirs ({why}); {choices}"
    )


def _fold_of(pooled: Dataset, folds: int, unsplittable: str) -> tuple[np.ndarray, list[str]]:
    """(fold of each track, the classes left to `unsplittable`'s care), refusing where it says so."""
    if unsplittable not in UNSPLITTABLE:
        raise ValueError(f"data.unsplittable={unsplittable!r} is not valid; choose one of: {', '.join(UNSPLITTABLE)}")
    names, _ = task_of(pooled)
    present = _presence(pooled)
    of = _deal(pooled, folds, np.zeros(len(pooled), dtype=bool))
    stranded = _stranded(present, of, folds)
    flagged = [names[c] for c in np.flatnonzero(stranded)]
    if flagged and unsplittable == "refuse":
        raise _refusal(
            folds,
            flagged,
            "their tracks are by too few artists",
            "set data.unsplittable=leave_out to leave them out of the test splits, or "
            "data.unsplittable=leak to deal them by track (their test tracks then share artists with "
            "training)",
        )
    if flagged and unsplittable == "leak":
        of = _deal(pooled, folds, present[:, stranded].any(axis=1))
        still = [names[c] for c in np.flatnonzero(_stranded(present, of, folds))]
        if still:
            raise _refusal(
                folds,
                still,
                "too few tracks, even dealt by track",
                "set data.unsplittable=leave_out, or use fewer folds",
            )
    return of, flagged


def check_unsplittable(dataset: DatasetDict, folds: int, unsplittable: str = "refuse") -> list[str]:
    """The classes `unsplittable` (leave_out, leak) will take care of in `folds`-fold cross-validation
    of `dataset`, or `UnsplittableClasses` where it refuses them. Data only: call it before any run."""
    return _fold_of(_pool(dataset), folds, unsplittable)[1]


def cross_validation_split(dataset: DatasetDict, folds: int, fold: int, unsplittable: str = "refuse") -> DatasetDict:
    """The `fold`-th of `folds` cross-validation splits of every track in `dataset`, whole groups to
    one split; classes that some fold would test untrained (`unsplittable_classes`) are refused,
    left out of the test split (leave_out) or dealt by track (leak), as `unsplittable` says."""
    from datasets import DatasetDict  # here, not above: checking a recipe imports this module

    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not one of 0..{folds - 1}")
    pooled = _pool(dataset)
    if len(pooled) < folds:
        raise ValueError(f"data.folds={folds}: only {len(pooled)} tracks to share out")
    keys = stratification_keys(pooled)
    counts = np.bincount(keys[keys >= 0])
    smallest = counts[counts > 0].min() if counts.any() else folds
    of, flagged = _fold_of(pooled, folds, unsplittable)
    members = {"test": of == fold, "validation": of == (fold + 1) % folds}
    members["train"] = ~(members["test"] | members["validation"])
    if flagged:
        _apply_unsplittable(pooled, members, flagged, unsplittable, fold)
    result = DatasetDict({name: pooled.select(np.flatnonzero(members[name])) for name in SPLITS})
    if smallest < folds:
        logger.warning("data.folds=%d: the rarest class has %d tracks, so some folds have none of it", folds, smallest)
    return result


def _apply_unsplittable(
    pooled: Dataset, members: dict[str, np.ndarray], flagged: list[str], unsplittable: str, fold: int
) -> None:
    """Apply leave_out to `members` (its test split loses the tracks of the flagged classes) and say
    in one line what was done: the tracks left out, or the test tracks whose artist trains."""
    names, _ = task_of(pooled)
    classes = ", ".join(flagged)
    if unsplittable == "leave_out":
        mark = _presence(pooled)[:, [names.index(name) for name in flagged]].any(axis=1) & members["test"]
        members["test"] &= ~mark
        logger.warning(
            "data.unsplittable=leave_out: left %d test track(s) of %s out of fold %d's test split",
            int(mark.sum()),
            classes,
            fold,
        )
        return
    groups = np.asarray(_groups(pooled))
    shared = np.isin(groups[members["test"]], groups[members["train"]])
    logger.warning(
        "data.unsplittable=leak: %s dealt by track; %d of fold %d's %d test tracks share an artist with training",
        classes,
        int(shared.sum()),
        fold,
        int(members["test"].sum()),
    )
