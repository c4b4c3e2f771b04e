"""A recipe's dataset: the builder's arguments from `data.*`, cross-validation folds, track limits.

Every path that needs a run's data (training, `evaluate`, the studies, cross-validation) builds it
here, so they all see the same tracks.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING

from finetune.data import DATASET_BUILDERS, DATASET_CHOICES, DATASET_OPTIONS, load_dataset
from finetune.data.common import sample_stream, task_of
from finetune.data.folds import check_unsplittable, cross_validation_split
from finetune.machine import cache_dir
from finetune.recipe import DATASET_KEYS, Recipe, RecipeError, listed

if TYPE_CHECKING:  # checking a recipe (dataset_arguments) imports this module without datasets
    from datasets import DatasetDict

# Recipe `data.*` keys handed to a dataset builder when set (null = the builder's default; a key
# with a non-null recipe default, like split_ratios, counts as set when it differs from it).
DATASET_OPTION_KEYS = tuple(key for key in DATASET_KEYS if key != "root")


def _root(data) -> str | None:
    """The builder's `root`: data.root; the generated folder for synthetic; None for a hub dataset
    named by data.path. Any other dataset without data.root is an error saying what to set."""
    if data.root is not None or (data.name == "hub" and data.path is not None):
        return data.root
    if data.name == "synthetic":
        return str(cache_dir() / "synthetic")
    if data.name == "hub":
        raise RecipeError(
            "data.path: set it to a Hub dataset id or a local dataset (data.path=user/name "
            "or data.path=/path/to/dataset)"
        )
    raise RecipeError(f"data.root: set it to your {data.name} folder (data.root=/path/to/{data.name})")


def dataset_arguments(recipe: Recipe) -> dict:
    """Keyword arguments for the recipe's dataset builder; a set key it does not take, or a value
    outside the dataset's choices (`DATASET_CHOICES`), is an error."""
    data = recipe.data
    builder = DATASET_BUILDERS[data.name]
    params = inspect.signature(builder).parameters
    choices = DATASET_CHOICES[data.name]
    defaults = type(data)()
    args = {"root": _root(data)}
    for key in DATASET_OPTION_KEYS:
        value = getattr(data, key)
        if value is None or (key not in params and value == getattr(defaults, key)):
            continue
        if key not in params:
            valid = [p for p in params if p in DATASET_OPTION_KEYS]
            unset = json.dumps(getattr(defaults, key))
            raise RecipeError(
                f"data.{key} does not apply to dataset {data.name!r} (unset it: data.{key}={unset}); "
                f"its options: {listed('data.' + v for v in valid)}"
            )
        if key in choices and value not in choices[key]:
            raise RecipeError(
                f"data.{key}: {value!r} is not a {key.replace('_', ' ')} of {data.name}; "
                f"choose one of {', '.join(choices[key])}"
            )
        args[key] = value
    if "seed" in params:
        args["seed"] = recipe.seed
    if data.streaming:  # every builder takes it (finetune.data.common.assemble streams the train split)
        args["streaming"] = True
    return args


def limit_tracks(dataset: DatasetDict, count: int, seed: int) -> DatasetDict:
    """At most `count` tracks per split, a seeded random sample. A streamed split is sampled by one
    pass over its metadata rows (reservoir sampling, no audio read), so the sample is the same
    every epoch and for every process, then streamed again."""
    from datasets import IterableDataset  # here, not above: checking a recipe imports this module

    def limit(split):
        if isinstance(split, IterableDataset):
            return sample_stream(split, count, seed)
        return split.shuffle(seed=seed).select(range(min(count, len(split))))

    return type(dataset)({name: limit(split) for name, split in dataset.items()})


def dataset_source(data) -> str:
    """`data.root=...` or `data.path=...`: the key that says where a recipe's dataset is."""
    key = "path" if data.name == "hub" and data.path is not None else "root"
    return f"data.{key}={getattr(data, key)}"


def check_trainable(dataset: DatasetDict, data) -> None:
    """Refuse a dataset that cannot train and score a model: fewer than two classes (one tag for
    tagging), or an indexed split without tracks (the streamed train split is not counted here)."""
    from datasets import IterableDataset

    label_names, multi_label = task_of(dataset["train"])
    least, kind, kinds = (1, "tag", "tags") if multi_label else (2, "class", "classes")
    if len(label_names) < least:
        count = f"{len(label_names)} {kind if len(label_names) == 1 else kinds}"
        raise RecipeError(
            f"{dataset_source(data)}: dataset {data.name!r} has {count} to train on "
            f"({listed(label_names)}); it needs at least {least}: add audio labelled with another {kind}"
        )
    sizes = {split: len(rows) for split, rows in dataset.items() if not isinstance(rows, IterableDataset)}
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        carved = "split_ratios" in DATASET_OPTIONS[data.name]  # folder, hub: splits carved by data.split_ratios
        ratios = f", or change data.split_ratios={data.split_ratios}" if carved else ""
        raise RecipeError(
            f"{dataset_source(data)}: the {empty[0]} split of dataset {data.name!r} has no tracks "
            f"({', '.join(f'{split} {size}' for split, size in sizes.items())}); every split needs "
            f"tracks to train, select and test a model: add audio{ratios}"
        )


def recipe_dataset(recipe: Recipe) -> DatasetDict:
    """The recipe's DatasetDict: built, cut into its cross-validation fold (`data.folds`), then
    limited to `data.max_tracks` per split; refused when it cannot train (`check_trainable`)."""
    dataset = load_dataset(recipe.data.name, **dataset_arguments(recipe))
    if recipe.data.folds:
        dataset = cross_validation_split(dataset, recipe.data.folds, recipe.data.fold, recipe.data.unsplittable)
    if recipe.data.max_tracks:
        dataset = limit_tracks(dataset, recipe.data.max_tracks, recipe.seed)
    check_trainable(dataset, recipe.data)
    return dataset


def check_folds(recipe: Recipe) -> list[str]:
    """Build the recipe's dataset and check its cross-validation folds before any run: the classes
    data.unsplittable leaves out or deals by track (`finetune.data.folds.check_unsplittable`), or
    `UnsplittableClasses` (one line naming them and the choices) where it refuses them; [] without
    data.folds."""
    if not recipe.data.folds:
        return []
    dataset = load_dataset(recipe.data.name, **dataset_arguments(recipe))
    return check_unsplittable(dataset, recipe.data.folds, recipe.data.unsplittable)
