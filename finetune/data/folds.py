"""K-fold cross-validation: a dataset's tracks pooled and cut into K label-stratified folds.

Fold `i` is the test split, fold `i + 1` (mod K) the validation split, the other K - 2 folds the
training split, so every track is tested exactly once and validates exactly once over the K runs.
The folds depend only on the tracks (ids and labels) and K, never on the recipe seed: runs with
other seeds or other models see the same folds, which makes their per-track results paired.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.common import SPLITS

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

logger = logging.getLogger("finetune.data")

FOLD_SEED = 0  # fixed: the folds are a property of the data, not of a run


def stratification_keys(split) -> np.ndarray:
    """(N,) the class of each track; for tagging, its rarest tag (so rare tags spread over folds;
    a track with no tag gets -1)."""
    if "label" in split.features:
        return np.asarray(split["label"], dtype=np.int64)
    tags = split["labels"]
    counts = np.bincount([t for row in tags for t in row], minlength=len(split.features["labels"].feature.names))
    return np.asarray([min(row, key=lambda t: (counts[t], t)) if row else -1 for row in tags], dtype=np.int64)


def assign_folds(ids: list[str], keys: np.ndarray, folds: int, seed: int = FOLD_SEED) -> np.ndarray:
    """(N,) fold of each track: within each key (class), tracks in a seeded random order are dealt
    to the folds in turn, continuing where the previous class stopped, so every fold gets
    floor(n_c / K) or ceil(n_c / K) tracks of each class and the folds differ in size by at most one."""
    if len(set(ids)) != len(ids):
        raise ValueError("cross-validation needs distinct track ids")
    fold = np.empty(len(ids), dtype=np.int64)
    rng = np.random.default_rng(seed)
    dealt = 0
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        members = members[np.argsort([ids[m] for m in members], kind="stable")]  # order of the files, not the splits
        members = members[rng.permutation(len(members))]
        fold[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return fold


def cross_validation_split(dataset: DatasetDict, folds: int, fold: int) -> DatasetDict:
    """The `fold`-th of `folds` cross-validation splits of every track in `dataset`."""
    from datasets import DatasetDict, concatenate_datasets  # here, not above: checking a recipe imports this module

    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not one of 0..{folds - 1}")
    pooled = concatenate_datasets([dataset[name] for name in SPLITS if name in dataset])
    if len(pooled) < folds:
        raise ValueError(f"data.folds={folds}: only {len(pooled)} tracks to share out")
    keys = stratification_keys(pooled)
    counts = np.bincount(keys[keys >= 0])
    smallest = counts[counts > 0].min() if counts.any() else folds
    of = assign_folds(list(pooled["id"]), keys, folds)
    members = {"test": of == fold, "validation": of == (fold + 1) % folds}
    members["train"] = ~(members["test"] | members["validation"])
    result = DatasetDict({name: pooled.select(np.flatnonzero(members[name])) for name in SPLITS})
    if smallest < folds:
        logger.warning(
            "data.folds=%d: the rarest class has %d tracks, so some folds have none of it", folds, smallest)
    return result
