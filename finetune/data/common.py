"""What every dataset builder shares: the clip record, option checks, drop reports, and turning
split lists into a `datasets.DatasetDict` after dropping missing, known-bad and unreadable files.

With `streaming=True` the training split is a `datasets.IterableDataset` generated lazily from the
metadata rows (same columns and features, `duration` None): no training file is opened while
building; a training file that turns out missing or unreadable is skipped and counted when it is
read (`finetune.clips.StreamCrops`). Validation and test stay indexed (evaluation needs lengths)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from datasets import (Audio, ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, IterableDataset,
                      Sequence as ListOf, Value)
from datasets.iterable_dataset import ArrowExamplesIterable

from finetune.data.headers import scan_files

logger = logging.getLogger("finetune.data")

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Clip:
    """One audio file of a split, before its header is checked."""

    id: str
    path: str  # relative to the dataset root, "/"-separated
    target: int | tuple[int, ...]  # class index (single-label) or tag indices (multi-label)


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
        raise FileNotFoundError(f"{dataset}: {relpath} not found under {root}; data.root should be "
                                f"the folder holding {holds}")
    return path


def check_choice(option: str, value, choices: Sequence) -> None:
    """Raise ValueError naming the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not valid; choose one of: "
                         f"{', '.join(repr(c) for c in choices)}")


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


def report(dataset: str, what: str, items: Mapping[str, str] | Sequence[str],
           level: int = logging.WARNING) -> None:
    """Log a count and a few examples (with causes when `items` maps path -> cause)."""
    if not items:
        return
    shown = [f"{k} ({items[k]})" if isinstance(items, Mapping) else k for k in list(items)[:3]]
    more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    logger.log(level, "%s: dropped %d %s: %s%s", dataset, len(items), what, "; ".join(shown), more)


def _check_inside(dataset: str, root: str, clip: Clip) -> None:
    """Metadata paths must stay inside the dataset root."""
    if not clip.path or clip.path.startswith("/") or ".." in clip.path.split("/"):
        raise ValueError(f"{dataset}: the path {clip.path!r} of clip {clip.id} is not inside "
                         f"the dataset folder {root}")


def _features(label_names: Sequence[str], multi_label: bool) -> Features:
    label = ClassLabel(names=list(label_names))
    target = {"labels": ListOf(label)} if multi_label else {"label": label}
    return Features({"id": Value("string"), "audio": Value("string"), **target,
                     "duration": Value("float64")})


STREAM_SHARDS = 1024  # most shards of a streamed split (DataLoader workers split the shards)


def _tables(shards: Sequence[Sequence[dict]], schema):
    """One Arrow table per shard, built only when the stream reaches it."""
    for index, shard in enumerate(shards):
        yield index, pa.Table.from_pylist(list(shard), schema=schema)


def iterable_split(rows: Sequence[dict], features: Features) -> IterableDataset:
    """A `datasets.IterableDataset` of metadata `rows` (dicts with `audio` as a path string) with
    `features` (`audio`: Audio(decode=False)).

    datasets 5.2 trap: `IterableDataset.from_generator(..., features=<Audio>)` (or a later
    `cast_column`) encodes every example through `Audio.encode_example`, which imports torchcodec
    even for a plain path. Shards of Arrow tables are cast as tables instead (like
    `Dataset.cast_column`), which needs no torchcodec. Rows are dealt round-robin into up to
    STREAM_SHARDS shards, so each shard spans the whole metadata order (a list sorted by class still
    mixes) and shard shuffling permutes them; DataLoader workers split the shards."""
    count = max(1, min(STREAM_SHARDS, len(rows)))
    shards = [list(rows[i::count]) for i in range(count)]
    schema = Features({**features, "audio": Value("string")}).arrow_schema
    tables = ArrowExamplesIterable(_tables, {"shards": shards, "schema": schema})
    return IterableDataset(tables, info=DatasetInfo(features=Features(
        {**features, "audio": Audio(decode=False)})))


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


def assemble(dataset: str, root: str, splits: Mapping[str, Sequence[Clip]],
             label_names: Sequence[str], multi_label: bool, allow_missing: bool,
             known_bad: Mapping[str, str] | None = None, streaming: bool = False) -> DatasetDict:
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
        raise ValueError(f"{dataset}: {len(repeated)} id(s) appear more than once in the metadata, "
                         f"e.g. {', '.join(map(str, repeated[:3]))}")
    for clips in splits.values():
        for clip in clips:
            _check_inside(dataset, root, clip)
    report(dataset, "known-bad files", {c.path: known_bad[c.id] for clips in splits.values()
                                       for c in clips if c.id in known_bad}, logging.INFO)
    splits = {name: [c for c in clips if c.id not in known_bad] for name, clips in splits.items()}
    indexed = [name for name in SPLITS if not (streaming and name == "train")]
    every = [c.path for name in indexed for c in splits[name]]
    scan = scan_files(root, every)
    if scan.missing and not allow_missing:
        raise FileNotFoundError(
            f"{dataset}: {len(scan.missing)} of {len(every)} files named by the split are missing "
            f"under {root}, e.g. {', '.join(scan.missing[:3])}; pass allow_missing=True "
            f"(data.allow_missing=true) to use the files that are there")
    report(dataset, "missing files", scan.missing)
    report(dataset, "unreadable files", scan.unreadable)
    if not scan.durations and not (streaming and splits["train"]):
        raise FileNotFoundError(f"{dataset}: no readable audio files under {root}")
    features = _features(label_names, multi_label)
    target = "labels" if multi_label else "label"
    result = {}
    if streaming:
        result["train"] = iterable_split(
            [{"id": c.id, "audio": os.path.join(root, c.path),
              target: list(c.target) if multi_label else c.target, "duration": None}
             for c in splits["train"]], features)
    for name in indexed:
        kept = [c for c in splits[name] if c.path in scan.durations]
        columns = {"id": [c.id for c in kept],
                   "audio": [os.path.join(root, c.path) for c in kept],
                   target: [list(c.target) if multi_label else c.target for c in kept],
                   "duration": [scan.durations[c.path] for c in kept]}
        # plain columns then cast: 3x faster than from_dict(features=...) on FMA-large (an empty
        # split needs the features up front, or its columns stay untyped); the audio column is
        # cast last, which works without torchcodec
        table = Dataset.from_dict(columns).cast(features) if kept else Dataset.from_dict(columns, features=features)
        result[name] = table.cast_column("audio", Audio(decode=False))
    return DatasetDict({name: result[name] for name in SPLITS})
