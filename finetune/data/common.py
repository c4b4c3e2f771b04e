"""What every dataset builder shares: the clip record, option checks, drop reports, and turning
split lists into a `datasets.DatasetDict` after dropping missing, known-bad and unreadable files;
for users' own datasets (`folder`, `hub`) also format checks, seeded stratified splits that
complete the splits a dataset lacks, and class names that every split shares.

With `streaming=True` the training split is a `datasets.IterableDataset` generated lazily from the
metadata rows (same columns and features, `duration` None): no training file is opened while
building; a training file that turns out missing or unreadable is skipped and counted when it is
read (`finetune.clips.StreamCrops`). Validation and test stay indexed (evaluation needs lengths)."""

from __future__ import annotations

import logging
import os
import posixpath
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.audio import UNSUPPORTED_EXTENSIONS
from finetune.data.headers import scan_files

if TYPE_CHECKING:  # datasets is imported where a dataset is built: checking a recipe reads this package without it
    from datasets import DatasetDict, Features, IterableDataset

logger = logging.getLogger("finetune.data")

SPLITS = ("train", "validation", "test")
# split names of users' folders and datasets -> ours (anything else is not a split we use)
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
}


@dataclass(frozen=True)
class DatasetCard:
    """How a model card names a published dataset (a dataset module's `CARD`)."""

    id: str  # the card's `datasets` entry: a Hub id, or the dataset's usual name
    name: str  # the dataset in the card's prose


@dataclass(frozen=True)
class Clip:
    """One audio file of a split, before its header is checked."""

    id: str
    path: str  # relative to the dataset root, "/"-separated
    target: int | tuple[int, ...]  # class index (single-label) or tag indices (multi-label)
    group: str = ""  # the artist (album) group that keeps it on one side of a split; "" its own (the id)


@dataclass(frozen=True)
class Labelled:
    """One file of a user's dataset (`folder`, `hub`) with its label names, before the split is
    completed and the names are indexed."""

    id: str
    path: str  # relative to the dataset root, "/"-separated
    label: str | tuple[str, ...]  # a class name, or tag names (multi-label)
    group: str = ""  # as `Clip.group`


def group_of(item: Clip | Labelled) -> str:
    """The group of a clip or row: its artist (album) group, or its id when the data knows none."""
    return item.group or item.id


def dataset_root(dataset: str, root: str | Path) -> str:
    """Absolute, normalised `root` (symlinks kept); a missing folder is an error naming it."""
    path = os.path.abspath(os.path.expanduser(root))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{dataset}: data.root {path} is a file; point it at the dataset folder")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{dataset}: dataset folder {path} does not exist")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"{dataset}: permission denied reading the dataset folder {path}")
    return path


def metadata_file(dataset: str, root: str | Path, relpath: str, holds: str) -> Path:
    """`root/relpath`, or an error saying what data.root should hold."""
    path = Path(root) / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: {relpath} not found under {root}; data.root should be the folder holding {holds}"
        )
    return path


def check_choice(option: str, value, choices: Sequence) -> None:
    """Raise ValueError naming the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not valid; choose one of: {', '.join(repr(c) for c in choices)}")


def check_options(option_choices: Mapping[str, Sequence], **values) -> None:
    """`check_choice` for every option of a dataset's OPTION_CHOICES; `values` holds each one."""
    for option, choices in option_choices.items():
        check_choice(option, values[option], choices)


def listing(dataset: str, folder: str) -> list[str]:
    """Names in `folder`, [] when it is absent; a folder that may not be read is an error naming it."""
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError as err:
        raise PermissionError(f"{dataset}: permission denied reading the folder {folder}") from err


def layout_folder(dataset: str, root: str, layouts: Sequence[str], names: Iterable[str]) -> str | None:
    """The first of `layouts` (folders relative to `root`, "" the root itself) that holds a folder
    named in `names`; None when none does."""
    for layout in layouts:
        folder = os.path.join(root, layout)
        present = set(listing(dataset, folder))
        if any(name in present and os.path.isdir(os.path.join(folder, name)) for name in names):
            return layout
    return None


def report(dataset: str, what: str, items: Mapping[str, str] | Sequence[str], level: int = logging.WARNING) -> None:
    """Log a count and a few examples (with causes when `items` maps path -> cause)."""
    if not items:
        return
    shown = [f"{k} ({items[k]})" if isinstance(items, Mapping) else k for k in list(items)[:3]]
    more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    logger.log(level, "%s: dropped %d %s: %s%s", dataset, len(items), what, "; ".join(shown), more)


def _check_inside(dataset: str, root: str, clip: Clip) -> None:
    """Metadata paths must stay inside the dataset root."""
    if not clip.path or clip.path.startswith("/") or ".." in clip.path.split("/"):
        raise ValueError(f"{dataset}: the path {clip.path!r} of clip {clip.id} is not inside the dataset folder {root}")


def task_of(split) -> tuple[list[str], bool]:
    """(label names, multi_label) of a split built by `finetune.data.load_dataset`."""
    if "labels" in split.features:
        return list(split.features["labels"].feature.names), True
    return list(split.features["label"].names), False


def split_features(label_names: Sequence[str], multi_label: bool, grouped: bool = False) -> Features:
    """Features of a built split, with `audio` still a path string (cast to Audio last); `grouped`:
    with the `group` column (str) that every loaded split has."""
    from datasets import ClassLabel, Features, Sequence as ListOf, Value

    label = ClassLabel(names=list(label_names))
    target = {"labels": ListOf(label)} if multi_label else {"label": label}
    group = {"group": Value("string")} if grouped else {}
    return Features({"id": Value("string"), **group, "audio": Value("string"), **target, "duration": Value("float64")})


def check_formats(dataset: str, paths: Iterable[str]) -> None:
    """Refuse files in a format soundfile cannot read (m4a, aac, wma ...), naming the extensions, a
    few files and the ffmpeg command that converts them: they would otherwise be dropped as unreadable."""
    refused = [p for p in paths if posixpath.splitext(p)[1].lower() in UNSUPPORTED_EXTENSIONS]
    if refused:
        kinds = sorted({posixpath.splitext(p)[1].lower() for p in refused})
        raise ValueError(
            f"{dataset}: {len(refused)} file(s) in a format soundfile cannot read ({', '.join(kinds)}), "
            f"e.g. {', '.join(refused[:3])}; convert them to FLAC, WAV or MP3, e.g. "
            f"`ffmpeg -i song{kinds[0]} song.flac`"
        )


def group_members(ids: Iterable[str], groups: Mapping[str, str] | None) -> list[list[str]]:
    """The ids of each group (`groups`: id -> group; None: every id its own), each sorted, the groups
    in the order of their first id."""
    members = {}
    for item in sorted(ids):
        members.setdefault(item if groups is None else groups[item], []).append(item)
    return list(members.values())


def _stratum_of(members: Sequence[str], strata: Mapping[str, str]) -> str:
    """A group's stratum: the most common of its members' (ties: the first name)."""
    counts = Counter(strata[item] for item in members)
    return min(counts, key=lambda stratum: (-counts[stratum], stratum))


def _split_sizes(count: int, fractions: Sequence[float]) -> tuple[int, int]:
    """(train, validation) sizes of a stratum of `count` tracks; test gets the rest. Three or more
    put at least one in each split of nonzero fraction, and training always gets one."""
    n_eval = [round(f * count) for f in fractions[1:]]
    if count >= 3:
        n_eval = [max(1, n) if f > 0 else 0 for n, f in zip(n_eval, fractions[1:])]
    while sum(n_eval) >= count > 0:  # ratios that leave training empty: take from the larger
        n_eval[n_eval.index(max(n_eval))] -= 1
    return count - sum(n_eval), n_eval[0]


def _deal_stratum(units: list[list[str]], fractions: Sequence[float]) -> dict[str, list[list[str]]]:
    """One stratum's groups (ids each, in dealing order) to the splits: training, then validation,
    then test, each group where its middle track falls (the first always to training). Of three
    or more groups each split of nonzero fraction gets one: an empty one takes the last group of
    the split holding the most."""
    n_train, n_valid = _split_sizes(sum(map(len, units)), fractions)
    dealt, position = {split: [] for split in SPLITS}, 0
    for index, members in enumerate(units):
        middle = position + len(members) / 2
        split = "train" if index == 0 or middle < n_train else "validation" if middle < n_train + n_valid else "test"
        dealt[split].append(members)
        position += len(members)
    for split, fraction in zip(SPLITS[1:], fractions[1:]):
        if len(units) >= 3 and fraction > 0 and not dealt[split]:
            dealt[split].append(dealt[max(SPLITS, key=lambda name: len(dealt[name]))].pop())
    return dealt


def stratified_split(
    strata: Mapping[str, str], fractions: Sequence[float], seed: int, groups: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Seeded split of the ids of `strata` (id -> stratum: a class, a row's rarest tag) by `fractions`
    (train, validation, test) within each stratum, dealing whole `groups` (id -> artist; None: each
    id its own), so no group is in two splits. A group counts in its most common stratum; a
    stratum's groups, in seeded order, are dealt by `_deal_stratum`. Each split lists its ids
    stratum by stratum, in the order the strata first appear; a stratum's split only depends on its
    own ids. With every id its own group, three or more ids put at least one in each split of
    nonzero fraction, and training always gets one."""
    order = {stratum: k for k, stratum in enumerate(dict.fromkeys(strata.values()))}
    by_stratum = {}
    for members in group_members(strata, groups):
        by_stratum.setdefault(_stratum_of(members, strata), []).append(members)
    split_ids = {split: [] for split in SPLITS}
    for stratum in sorted(by_stratum, key=order.__getitem__):
        units = by_stratum[stratum]
        rng = np.random.default_rng([seed, zlib.crc32(stratum.encode())])
        dealt = _deal_stratum([units[k] for k in rng.permutation(len(units))], fractions)
        for split in SPLITS:
            split_ids[split] += sorted(track for members in dealt[split] for track in members)
    return split_ids


def _strata(rows: Sequence[Labelled]) -> dict[str, str]:
    """id -> stratum: the class, or (multi-label) the row's rarest tag ("" for none)."""
    counts = Counter(tag for row in rows if isinstance(row.label, tuple) for tag in row.label)
    return {
        row.id: row.label
        if isinstance(row.label, str)
        else min(row.label, key=lambda tag: (counts[tag], tag), default="")
        for row in rows
    }


def complete_splits(
    dataset: str, given: Mapping[str, Sequence[Labelled]], fractions: Sequence[float], seed: int
) -> dict[str, list[Labelled]]:
    """train / validation / test from a dataset's own splits (empty ones count as absent): the
    absent ones are carved from train by `stratified_split` in proportion to their `fractions`
    (train only: both; train + test: validation; train + validation: test)."""
    present = {name: list(rows) for name, rows in given.items() if rows}
    if "train" not in present:
        raise ValueError(
            f"{dataset}: no training split with labelled rows; found: "
            f"{', '.join(f'{n} ({len(r)} rows)' for n, r in given.items()) or 'nothing'}"
        )
    carve = [split for split in SPLITS if split == "train" or split not in present]
    if len(carve) == 1:
        return {split: present[split] for split in SPLITS}
    shares = [fractions[i] if split in carve else 0.0 for i, split in enumerate(SPLITS)]
    shares = [share / sum(shares) for share in shares]
    by_id = {row.id: row for row in present["train"]}
    carved = stratified_split(
        _strata(present["train"]), shares, seed, {row.id: group_of(row) for row in by_id.values()}
    )
    return {split: [by_id[i] for i in carved[split]] if split in carve else present[split] for split in SPLITS}


def _name_key(name: str) -> tuple:
    """Sort key of class names: numbers numerically ("2" before "10"), then text."""
    number = name.isdigit() or (name[:1] == "-" and name[1:].isdigit())
    return (not number, int(name) if number else 0, name)


def label_set(labels: Iterable[str | tuple[str, ...]]) -> set[str]:
    """Class (or tag) names that occur in `labels` (a class name, or tag names, each)."""
    return {name for label in labels for name in ((label,) if isinstance(label, str) else label)}


def class_names(
    dataset: str, occurring: Mapping[str, set[str]], multi_label: bool, order: Sequence[str] | None = None
) -> list[str]:
    """The classes (tags) of training (`occurring`: split -> names seen), in a dataset's declared
    `order` or sorted. A class seen in validation or test but not in training is an error naming
    it; a tag is dropped from those splits with a warning (training's tags are the vocabulary). A
    class of training that an evaluation split lacks is a warning (its scores there are undefined)."""
    train = occurring["train"]
    for split in SPLITS[1:]:
        unseen = sorted(occurring[split] - train, key=_name_key)
        if unseen and not multi_label:
            raise ValueError(
                f"{dataset}: class(es) {', '.join(unseen[:5])} occur in {split} but not in train; "
                f"every class needs training examples (add some, or remove those files)"
            )
        report(dataset, f"{split} tag(s) that no training track has", unseen)
        absent = sorted(train - occurring[split], key=_name_key)
        if absent:
            logger.warning(
                "%s: %d class(es) have no %s tracks: %s",
                dataset,
                len(absent),
                split,
                ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""),
            )
    return [name for name in order if name in train] if order is not None else sorted(train, key=_name_key)


class LabelIndex:
    """Label name(s) -> a `Clip` target: the class index, or sorted tag indices (tags outside
    `names` left out). A class, not a closure, so that streamed splits can pickle it."""

    def __init__(self, names: Sequence[str]):
        self.index = {name: i for i, name in enumerate(names)}

    def __call__(self, label: str | tuple[str, ...]) -> int | tuple[int, ...]:
        if isinstance(label, str):
            return self.index[label]
        return tuple(sorted(self.index[tag] for tag in label if tag in self.index))


def labelled_clips(splits: Mapping[str, Sequence[Labelled]], names: Sequence[str]) -> dict[str, list[Clip]]:
    """`Clip`s of `splits`, label names turned into indices into `names`."""
    target = LabelIndex(names)
    return {
        split: [Clip(row.id, row.path, target(row.label), row.group) for row in rows] for split, rows in splits.items()
    }


STREAM_SHARDS = 1024  # most shards of a streamed split (DataLoader workers split the shards)


STREAM_SHUFFLE_SEED = 0  # the order rows are dealt into shards (each epoch reshuffles shards and rows)


def iterable_split(rows: Sequence[dict], features: Features) -> IterableDataset:
    """A `datasets.IterableDataset` of metadata `rows` (dicts with `audio` as a path string) with
    `features` (`audio`: Audio(decode=False)), through public datasets APIs only: an Arrow-backed
    Dataset, its audio column cast as a table (datasets 5.2 trap: `IterableDataset.from_generator`
    with an Audio feature, or a streamed `cast_column`, encodes every example through torchcodec),
    shuffled once with a fixed seed so each shard mixes classes, then `to_iterable_dataset` in up
    to STREAM_SHARDS shards that DataLoader workers (and ranks) divide among themselves."""
    from datasets import Audio, Dataset, Features, Value

    table = Dataset.from_list(list(rows), features=Features({**features, "audio": Value("string")}))
    table = table.cast_column("audio", Audio(decode=False)).shuffle(seed=STREAM_SHUFFLE_SEED).flatten_indices()
    return table.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(rows))))


def sample_stream(split: IterableDataset, count: int, seed: int) -> IterableDataset:
    """A seeded uniform sample of at most `count` rows of a streamed split, by reservoir sampling
    over its metadata rows (no audio read), in stream order, streamed with the same features."""
    rng, chosen = np.random.default_rng(seed), []  # (position, row)
    for position, row in enumerate(split):
        slot = position if position < count else int(rng.integers(position + 1))
        if slot >= count:
            continue
        entry = (position, {**row, "audio": row["audio"]["path"]})
        if position < count:
            chosen.append(entry)
        else:
            chosen[slot] = entry
    return iterable_split([row for _, row in sorted(chosen, key=lambda e: e[0])], split.features)


def assemble(
    dataset: str,
    root: str,
    splits: Mapping[str, Sequence[Clip]],
    label_names: Sequence[str],
    multi_label: bool,
    allow_missing: bool,
    known_bad: Mapping[str, str] | None = None,
    streaming: bool = False,
) -> DatasetDict:
    """DatasetDict of `splits` (train/validation/test) under the absolute `root`.

    Known-bad clips (id -> reason) and unreadable files are dropped and reported; files that are
    missing are an error with a count and examples unless `allow_missing`. With `streaming` the
    train split is an IterableDataset of its metadata rows and its files are not checked here
    (`allow_missing` then only concerns validation and test): they are checked as they are read.
    """
    known_bad = known_bad or {}
    ids = Counter(c.id for clips in splits.values() for c in clips)
    repeated = [clip_id for clip_id, count in ids.items() if count > 1]
    if repeated:  # one id with two labels or in two splits would corrupt labels or leak
        raise ValueError(
            f"{dataset}: {len(repeated)} id(s) appear more than once in the metadata, "
            f"e.g. {', '.join(map(str, repeated[:3]))}"
        )
    for clips in splits.values():
        for clip in clips:
            _check_inside(dataset, root, clip)
    report(
        dataset,
        "known-bad files",
        {c.path: known_bad[c.id] for clips in splits.values() for c in clips if c.id in known_bad},
        logging.INFO,
    )
    splits = {name: [c for c in clips if c.id not in known_bad] for name, clips in splits.items()}
    indexed = [name for name in SPLITS if not (streaming and name == "train")]
    every = [c.path for name in indexed for c in splits[name]]
    scan = scan_files(root, every)
    if scan.missing and not allow_missing:
        raise FileNotFoundError(
            f"{dataset}: {len(scan.missing)} of {len(every)} files named by the split are missing "
            f"under {root}, e.g. {', '.join(scan.missing[:3])}; pass allow_missing=True "
            f"(data.allow_missing=true) to use the files that are there"
        )
    report(dataset, "missing files", scan.missing)
    report(dataset, "unreadable files", scan.unreadable)
    if not scan.durations and not (streaming and splits["train"]):
        raise FileNotFoundError(f"{dataset}: no readable audio files under {root}")
    from datasets import Audio, Dataset, DatasetDict

    features = split_features(label_names, multi_label, grouped=True)
    target = "labels" if multi_label else "label"
    result = {}
    if streaming:
        result["train"] = iterable_split(
            [
                {
                    "id": c.id,
                    "group": group_of(c),
                    "audio": os.path.join(root, c.path),
                    target: list(c.target) if multi_label else c.target,
                    "duration": None,
                }
                for c in splits["train"]
            ],
            features,
        )
    for name in indexed:
        kept = [c for c in splits[name] if c.path in scan.durations]
        columns = {
            "id": [c.id for c in kept],
            "group": [group_of(c) for c in kept],
            "audio": [os.path.join(root, c.path) for c in kept],
            target: [list(c.target) if multi_label else c.target for c in kept],
            "duration": [scan.durations[c.path] for c in kept],
        }
        # plain columns then cast: 3x faster than from_dict(features=...) on FMA-large (an empty
        # split needs the features up front, or its columns stay untyped); the audio column is
        # cast last, which works without torchcodec
        table = Dataset.from_dict(columns).cast(features) if kept else Dataset.from_dict(columns, features=features)
        result[name] = table.cast_column("audio", Audio(decode=False))
    return DatasetDict({name: result[name] for name in SPLITS})
