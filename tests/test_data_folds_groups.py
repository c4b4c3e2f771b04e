"""Group-aware folds and splits: no group on two sides of any fold or split the toolkit builds (a
property over random datasets and group layouts), the plain stratified deal when every track is its
own group, and classes that some fold would test untrained: refused, left out or leaked, in one line."""

import logging
import re

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from finetune import recipe as recipes
from finetune.data.common import stratified_split
from finetune.data.folds import (
    UnsplittableClasses,
    assign_folds,
    check_unsplittable,
    cross_validation_split,
    stratification_keys,
    unsplittable_classes,
)
from finetune.data.recipe_data import check_folds, recipe_dataset
from test_data_gtzan import make_gtzan

SPLITS = ("train", "validation", "test")


def random_dataset(rng, multi_label=False) -> DatasetDict:
    """A random dataset: classes of random sizes, artists of random sizes (some spanning classes),
    ids in random order over three splits."""
    count, classes = int(rng.integers(20, 90)), int(rng.integers(2, 6))
    names = [f"c{k}" for k in range(classes)]
    labels = rng.integers(0, classes, count)
    artists = rng.integers(0, int(rng.integers(count // 6 + 2, count)), count)
    ids = [f"t{n:03d}" for n in rng.permutation(count)]
    label = ClassLabel(names=names)
    target = (
        {"labels": [sorted({int(x), int(y)}) for x, y in zip(labels, rng.integers(0, classes, count))]}
        if multi_label
        else {"label": labels.tolist()}
    )
    features = Features(
        {
            "id": Value("string"),
            "group": Value("string"),
            **({"labels": Sequence(label)} if multi_label else {"label": label}),
        }
    )
    table = Dataset.from_dict({"id": ids, "group": [f"artist {a}" for a in artists], **target}, features=features)
    cut = sorted(rng.integers(0, count, 2))
    return DatasetDict({name: table.select(range(a, b)) for name, a, b in zip(SPLITS, [0, *cut], [*cut, count])})


def check_disjoint(splits: dict) -> None:
    groups = [set(splits[name]["group"]) for name in SPLITS]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


@pytest.mark.slow
@pytest.mark.parametrize("multi_label", [False, True])
def test_no_fold_shares_a_group_across_its_splits(multi_label):
    for seed in range(25):
        rng = np.random.default_rng(seed)
        dataset = random_dataset(rng, multi_label)
        folds = int(rng.integers(3, 6))
        tested = []
        for fold in range(folds):
            splits = cross_validation_split(dataset, folds, fold, unsplittable="leave_out")
            check_disjoint(splits)
            tested += list(splits["test"]["id"])
        assert len(tested) == len(set(tested))  # no track tested twice


def test_deals_keep_groups_whole_over_many_layouts():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        count, folds = int(rng.integers(5, 200)), int(rng.integers(3, 9))
        ids = [f"t{rng.integers(10**6)}-{n}" for n in range(count)]
        keys = rng.integers(-1, int(rng.integers(1, 8)), count)
        groups = [f"g{g}" for g in rng.integers(0, int(rng.integers(1, count + 1)), count)]
        of = assign_folds(ids, keys, folds, groups)
        for group in set(groups):
            assert len({of[n] for n in range(count) if groups[n] == group}) == 1
        fractions = rng.dirichlet([4, 1, 1])
        split = stratified_split(dict(zip(ids, map(str, keys))), fractions, seed, dict(zip(ids, groups)))
        assert sorted(sum(split.values(), [])) == sorted(ids)
        of_split = {track: name for name, tracks in split.items() for track in tracks}
        for group in set(groups):
            assert len({of_split[t] for t, g in zip(ids, groups) if g == group}) == 1


def classic_deal(ids, keys, folds, seed=0):
    """The stratified deal of earlier versions (no groups): within each class, tracks sorted by id in
    seeded order dealt to the folds in turn, continuing where the previous class stopped."""
    fold, rng, dealt = np.empty(len(ids), dtype=np.int64), np.random.default_rng(seed), 0
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        members = members[np.argsort([ids[m] for m in members], kind="stable")]
        members = members[rng.permutation(len(members))]
        fold[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return fold


def test_every_track_its_own_group_gives_the_folds_of_earlier_versions():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        count, folds = int(rng.integers(3, 150)), int(rng.integers(3, 9))
        ids = [f"t{rng.integers(10**6)}-{n}" for n in range(count)]
        keys = rng.integers(-1, int(rng.integers(1, 9)), count)
        expected = classic_deal(ids, keys, folds)
        assert (assign_folds(ids, keys, folds) == expected).all()
        assert (assign_folds(ids, keys, folds, ids) == expected).all()


def test_folds_stratify_as_far_as_groups_allow():
    """Classes of many small artists spread over the folds like tracks would, within an artist's size."""
    ids = [f"t{n:04d}" for n in range(600)]
    keys = np.repeat([0, 1, 2], [300, 200, 100])
    groups = [f"{k}-{n // 3}" for n, k in enumerate(keys)]  # artists of three tracks, one class each
    of = assign_folds(ids, keys, 5, groups)
    for key in range(3):
        per_fold = np.bincount(of[keys == key], minlength=5)
        assert per_fold.max() - per_fold.min() <= 3, (key, per_fold)


def one_artist_class() -> DatasetDict:
    """Class `solo` by one artist (6 tracks), classes `a` and `b` by many."""
    labels = ["solo"] * 6 + ["a", "b"] * 12
    groups = ["the soloist"] * 6 + [f"artist {n}" for n in range(24)]
    table = Dataset.from_dict(
        {"id": [f"t{n:02d}" for n in range(30)], "group": groups, "label": labels},
        features=Features(
            {"id": Value("string"), "group": Value("string"), "label": ClassLabel(names=["a", "b", "solo"])}
        ),
    )
    return DatasetDict({"train": table, "validation": table.select([]), "test": table.select([])})


def test_unsplittable_classes_are_refused_left_out_or_leaked_in_one_line(caplog):
    dataset = one_artist_class()
    assert unsplittable_classes(dataset, 3) == ["solo"]
    with pytest.raises(UnsplittableClasses) as refused:
        cross_validation_split(dataset, 3, 0)
    message = str(refused.value)
    assert "\n" not in message and re.search(
        r"class\(es\) solo would be tested .*data.unsplittable=leave_out .*"
        r"data.unsplittable=leak",
        message,
    )
    assert isinstance(refused.value, ValueError)
    with pytest.raises(UnsplittableClasses):
        check_unsplittable(dataset, 3)
    assert check_unsplittable(dataset, 3, "leave_out") == ["solo"]
    for fold in range(3):
        with caplog.at_level(logging.WARNING, logger="finetune.data"):
            caplog.clear()
            left = cross_validation_split(dataset, 3, fold, unsplittable="leave_out")
        assert "solo" not in {left["test"].features["label"].int2str(x) for x in left["test"]["label"]}
        check_disjoint(left)
        lines = [r.getMessage() for r in caplog.records if "leave_out" in r.getMessage()]
        assert len(lines) == 1 and re.fullmatch(
            r"data.unsplittable=leave_out: left \d+ test track\(s\) of solo out "
            r"of fold \d's test split",
            lines[0],
        )
    solo = dataset["train"].features["label"].str2int("solo")
    for fold in range(3):
        with caplog.at_level(logging.WARNING, logger="finetune.data"):
            caplog.clear()
            leaked = cross_validation_split(dataset, 3, fold, unsplittable="leak")
        assert leaked["test"]["label"].count(solo) == 2 and solo in leaked["train"]["label"]  # dealt by track
        lines = [r.getMessage() for r in caplog.records if "leak" in r.getMessage()]
        assert lines == [
            f"data.unsplittable=leak: solo dealt by track; 2 of fold {fold}'s 10 test tracks share an "
            f"artist with training"
        ]
        assert leaked["test"]["group"].count("the soloist") == 2  # the real groups stay in the column


def test_a_class_too_small_even_by_track_is_refused_when_leaked():
    table = one_artist_class()["train"].select(range(4, 30))  # solo: two tracks
    dataset = DatasetDict({"train": table, "validation": table.select([]), "test": table.select([])})
    with pytest.raises(
        UnsplittableClasses,
        match="solo .*too few tracks, even dealt by track\\); set data.unsplittable=leave_out, or use fewer folds$",
    ):
        cross_validation_split(dataset, 3, 0, unsplittable="leak")


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    """GTZAN's first 20 tracks of each genre: real artists from the shipped index (reggae's are all
    Bob Marley's)."""
    root = tmp_path_factory.mktemp("gtzan")
    make_gtzan(root, count=20)
    return root


def test_recipe_folds_keep_artists_apart_and_ignore_the_seed(gtzan_root):
    def folds(seed, **data):
        return [
            {
                name: set(split["id"])
                for name, split in recipe_dataset(
                    recipes.from_dict(
                        {
                            "seed": seed,
                            "data": {
                                "name": "gtzan",
                                "root": str(gtzan_root),
                                "split_scheme": "random",
                                "folds": 4,
                                "fold": fold,
                                **data,
                            },
                        }
                    )
                ).items()
            }
            for fold in range(4)
        ]

    data = {"name": "gtzan", "root": str(gtzan_root), "split_scheme": "random", "folds": 4}
    with pytest.raises(UnsplittableClasses, match="class\\(es\\) .*reggae"):
        check_folds(recipes.from_dict({"data": data}))
    assert "reggae" in check_folds(recipes.from_dict({"data": {**data, "unsplittable": "leave_out"}}))
    assert check_folds(recipes.from_dict({"data": {**data, "group_by": "none"}})) == []
    first = folds(0, unsplittable="leave_out")
    assert first == folds(7, unsplittable="leave_out")
    for fold in range(4):
        dataset = recipe_dataset(recipes.from_dict({"data": {**data, "fold": fold, "unsplittable": "leave_out"}}))
        check_disjoint(dataset)


def test_gtzan_random_split_deals_whole_artists(gtzan_root):
    from finetune.data import gtzan

    data = gtzan.build(gtzan_root, split_scheme="random", seed=5)
    check_disjoint(data)
    assert set(data["train"]["label"]) == set(range(10))  # every genre trains
    keys = stratification_keys(data["test"])
    assert len(set(keys.tolist())) >= 5  # the test split still spans most genres
