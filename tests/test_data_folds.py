"""Cross-validation folds through a recipe (`data.folds`, `data.fold`) on generated GTZAN and MTAT
folders: disjoint splits, every track tested and validated once over K runs, stratified, the same
whatever the recipe seed."""

from collections import Counter

import pytest

from finetune import recipe as recipes
from finetune.data import synthetic
from finetune.data.recipe_data import recipe_dataset
from test_data_gtzan import make_gtzan

FOLDS = 5
PER_GENRE = 12  # 12 tracks per genre over 5 folds: 2 or 3 per fold


def fold_splits(data: dict, seed: int = 0) -> list[dict[str, list[str]]]:
    """For each fold: {split: ids} of the recipe dataset with these `data.*` settings."""
    splits = []
    for fold in range(FOLDS):
        recipe = recipes.from_dict({"seed": seed, "data": {**data, "folds": FOLDS, "fold": fold}})
        dataset = recipe_dataset(recipe)
        splits.append({name: list(split["id"]) for name, split in dataset.items()})
    return splits


def check_partition(folds: list[dict[str, list[str]]], tracks: set[str]) -> None:
    """Each fold's splits are disjoint and hold every track; over the folds every track is tested
    once and validates once."""
    for fold in folds:
        assert sorted(fold) == ["test", "train", "validation"]
        assert sum(len(ids) for ids in fold.values()) == len(tracks)
        assert set().union(*fold.values()) == tracks
    for split in ("test", "validation"):
        counts = Counter(track for fold in folds for track in fold[split])
        assert set(counts) == tracks and set(counts.values()) == {1}, split
    sizes = [len(fold["test"]) for fold in folds]
    assert max(sizes) - min(sizes) <= 1


def check_stratified(folds: list[dict[str, list[str]]], class_of: dict[str, str]) -> None:
    """Every class has, in every fold, floor or ceil of its count / K test tracks."""
    for name in set(class_of.values()):
        per_fold = [sum(class_of[t] == name for t in fold["test"]) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, (name, per_fold)


@pytest.fixture(scope="module")
def gtzan_data(tmp_path_factory) -> dict:
    """GTZAN's first 12 tracks of each genre, each its own group (group_by=none: the plain stratified
    folds; by artist, blues, classical, reggae and rock would be one artist each)."""
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, count=PER_GENRE)
    return {"name": "gtzan", "root": str(root), "split_scheme": "random", "group_by": "none"}


def test_gtzan_folds_partition_and_stratify(gtzan_data):
    folds = fold_splits(gtzan_data)
    tracks = set().union(*folds[0].values())
    assert len(tracks) == 10 * PER_GENRE
    check_partition(folds, tracks)
    check_stratified(folds, {t: t.split("/")[0] for t in tracks})  # ids are genre/genre.000NN


def test_gtzan_folds_ignore_the_recipe_seed(gtzan_data):
    own = [recipe_dataset(recipes.from_dict({"seed": seed, "data": gtzan_data})) for seed in (0, 7)]
    assert list(own[0]["test"]["id"]) != list(own[1]["test"]["id"]), "the random split itself follows the seed"
    as_sets = [
        [{split: set(ids) for split, ids in fold.items()} for fold in fold_splits(gtzan_data, seed)] for seed in (0, 7)
    ]
    assert as_sets[0] == as_sets[1]


@pytest.mark.slow
def test_tagging_folds(mtat_root):
    folds = fold_splits({"name": "mtat", "root": str(mtat_root), "tags": 7})
    tracks = set().union(*folds[0].values())
    assert len(tracks) == 64
    check_partition(folds, tracks)
    # each fixture clip sounds like one generated class, its rarest tag: the folds spread every class
    class_of = {str(n): synthetic.CLASSES[n % len(synthetic.CLASSES)] for n in range(64)}
    check_stratified(folds, {t: class_of[t] for t in tracks})
