"""Dataset loaders: `load_dataset(name, root, **options)` -> DatasetDict(train, validation, test).

Named datasets (``DATASET_MODULES``, the one registry) and users' own: `folder` (a folder of audio
in the `audiofolder` conventions) and `hub` (any `datasets` dataset, by Hub id or local path).

Columns: `id`, `audio` (Audio(decode=False) holding the absolute path), `label` (ClassLabel) or
`labels` (list of tag indices), `duration` (seconds, from the header). Decode with
`finetune.data.audio.read_window`. Every builder takes `streaming`: True makes the train split a
`datasets.IterableDataset` of the metadata rows, built without opening its files (`duration` None).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from finetune.data import fma, folder, gtzan, hub, jamendo, mtat, synthetic
from finetune.recipe import listed

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

# The dataset registry, recipe `data.name` -> its module: `build(root, **options)`, `OPTION_CHOICES`,
# `CARD`, and optionally `multi_label_task` and `split_detail` (docs/CONTRACTS.md). Every list of
# dataset names or facts is read off it.
DATASET_MODULES = {
    "gtzan": gtzan,
    "mtat": mtat,
    "fma": fma,
    "jamendo": jamendo,
    "synthetic": synthetic,
    "folder": folder,
    "hub": hub,
}


class ModuleFacts(Mapping):
    """Dataset name -> one fact of its module, read from `DATASET_MODULES` when asked (so a dataset
    added there shows in every view at once)."""

    def __init__(self, fact: Callable[[ModuleType], object]):
        self.fact = fact

    def __getitem__(self, name: str):
        return self.fact(DATASET_MODULES[name])

    def __iter__(self) -> Iterator[str]:
        return iter(DATASET_MODULES)

    def __len__(self) -> int:
        return len(DATASET_MODULES)


DATASET_BUILDERS = ModuleFacts(lambda module: module.build)
# Options each builder accepts (its keyword arguments after `root`), for recipe validation.
DATASET_OPTIONS = ModuleFacts(lambda module: tuple(inspect.signature(module.build).parameters)[1:])
# Each dataset's option -> allowed values (its OPTION_CHOICES), checked by recipes before a run.
DATASET_CHOICES = ModuleFacts(lambda module: module.OPTION_CHOICES)
# How model cards name each dataset (`common.DatasetCard`; None: the card names the user's own data).
DATASET_CARDS = ModuleFacts(lambda module: module.CARD)


def known_multi_label(name: str, **options) -> bool | None:
    """Whether dataset `name` built with `options` (its builder's keywords) is multi-label, when its
    options tell (the module's `multi_label_task`); None when only its files do (folder, hub)."""
    rule = getattr(DATASET_MODULES[name], "multi_label_task", None)
    if rule is None:
        return None
    bound = inspect.signature(DATASET_BUILDERS[name]).bind(**options)
    bound.apply_defaults()
    return rule(**bound.arguments)


def load_dataset(name: str, root: str | Path | None, **options) -> DatasetDict:
    """Build dataset `name` from the files under `root` (hub: None when `path` names the dataset);
    options are the builder's keywords."""
    if name not in DATASET_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_BUILDERS)}")
    unknown = sorted(set(options) - set(DATASET_OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; its options: {listed(DATASET_OPTIONS[name])}"
        )
    return DATASET_BUILDERS[name](root, **options)
