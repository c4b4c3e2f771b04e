"""Any `datasets` dataset (`data.name=hub`): a Hub id, a `save_to_disk` folder, or a local folder of
data files that `datasets.load_dataset` reads (Parquet, CSV, JSON ...), named by `path` (or `root`).

Audio: the `audio_column` (default `audio`), an `Audio` feature, {bytes, path} structs or path
strings, is never decoded by `datasets` (no torchcodec): it is read as `Audio(decode=False)`. Bytes
are written once into a content-addressed cache (`<cache_dir>/hub-audio/<sha256[:2]>/<sha256><suffix>`,
atomically, reused by later runs) and our reader reads that file; a path alone is used as it is
(a relative one: under the local dataset folder).
Labels: the `label_column` (default `label`), a ClassLabel (its order kept), strings or integers
(sorted), or a list of them (multi-label tags). Rows without a label (None, "", or a negative
ClassLabel id, as in test splits with hidden labels) are dropped and counted; a split left without
labelled rows counts as absent.
Splits: train, validation (or valid, val, dev, eval), test; a dataset with one split of another name
uses it as train; the splits it lacks are carved from train (`common.complete_splits`). Ids are
`<the dataset's split name>/<row>` (streamed: `<split>/<the audio's name in the dataset>`).
Streaming (`streaming=True`): the train split comes from `load_dataset(..., streaming=True)` (a saved
dataset: `to_iterable_dataset`), its bytes extracted row by row as it is read; validation and test
are read in full. It needs the dataset's own labelled validation and test splits, and a label
column of strings or integers costs one pass over the training labels (a ClassLabel column none).
Groups (`group_by`: artist, album or none): the column `group_column` (default: one named like the
level, `artist` or `album`, where the dataset has it; otherwise each row is its own group);
artists are joined through collaborations over the indexed splits (a streamed row: `lone_group`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.console import progress
from finetune.data.common import (
    SPLIT_ALIASES,
    SPLITS,
    STREAM_SHARDS,
    LabelIndex,
    Labelled,
    assemble,
    check_formats,
    class_names,
    complete_splits,
    label_set,
    labelled_clips,
    report,
    split_features,
)
from finetune.data.groups import GROUP_LEVELS, check_level, credit_groups, lone_group
from finetune.machine import cache_dir
from finetune.recipe import listed

if TYPE_CHECKING:  # datasets is imported where a dataset is loaded: checking a recipe imports this module
    from datasets import Dataset, DatasetDict, IterableDataset

logger = logging.getLogger("finetune.data")

OPTION_CHOICES = {}  # no option with a fixed set of values
CARD = None  # a model card names the user's own data (finetune.export.dataset_id)
LABEL_TYPES = ("string", "large_string", "int", "uint", "bool")  # Value dtypes a label column may have


def audio_cache() -> Path:
    """Where audio bytes of datasets are extracted, one file per distinct content."""
    return cache_dir() / "hub-audio"


def extract(data: bytes, name: str | None) -> str:
    """The cache file holding `data` (written once, atomically), with the suffix of `name`."""
    digest = hashlib.sha256(data).hexdigest()
    path = audio_cache() / digest[:2] / (digest + os.path.splitext(name or "")[1].lower())
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    return str(path)


def _cell(value: str | Mapping | None) -> tuple[bytes | None, str | None]:
    """(bytes, path) of one audio cell: {bytes, path}, or a path."""
    return (None, value) if isinstance(value, str) else ((value or {}).get("bytes"), (value or {}).get("path"))


def audio_file(value: str | Mapping | None, base: str | None, where: str) -> str:
    """The absolute path of one audio cell: its extracted bytes, else its path (a relative one
    under `base`, the local dataset folder)."""
    data, path = _cell(value)
    if data:
        return extract(data, path)
    if not path:
        raise ValueError(f"hub: {where} has no audio (neither bytes nor a path)")
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        if base is None:
            raise ValueError(
                f"hub: {where} has only a relative audio path {path!r} and no bytes; a Hub dataset "
                f"needs bytes or absolute paths"
            )
        path = os.path.join(base, path)
    return os.path.abspath(path)


@dataclass(frozen=True)
class LabelReader:
    """Label name(s) of one label cell: ClassLabel ids through `names`, other values as text; None
    for an unlabelled row (None, "", a negative ClassLabel id)."""

    names: tuple[str, ...] | None  # a ClassLabel column's names
    multi_label: bool

    def name(self, value) -> str | None:
        if value is None or value == "" or (self.names is not None and value < 0):
            return None
        return self.names[value] if self.names is not None else str(value)

    def __call__(self, value) -> str | tuple[str, ...] | None:
        if not self.multi_label:
            return self.name(value)
        return None if value is None else tuple(sorted({n for n in map(self.name, value) if n is not None}))


def label_reader(source: str, column: str, feature) -> LabelReader:
    """The reader of a label column of type `feature`; any other type is an error naming it."""
    from datasets import ClassLabel, LargeList, List, Value

    multi_label = isinstance(feature, (List, LargeList))
    inner = feature.feature if multi_label else feature
    if isinstance(inner, ClassLabel):
        return LabelReader(tuple(inner.names), multi_label)
    if isinstance(inner, Value) and inner.dtype.startswith(LABEL_TYPES):
        return LabelReader(None, multi_label)
    raise ValueError(
        f"hub: the label column {column!r} of {source} holds {feature}; it needs class names, "
        f"integers, a ClassLabel, or a list of them for tags (data.label_column)"
    )


def _check_columns(source: str, features, audio_column: str, label_column: str, group_column: str | None) -> None:
    """The columns exist (the group column where data.group_column names one) and the audio one
    holds audio; errors name the columns there are."""
    from datasets import Audio, Value

    if features is None:
        raise ValueError(f"hub: the columns of {source} are unknown when streamed; use data.streaming=false")
    named = ((audio_column, "audio_column"), (label_column, "label_column"), (group_column, "group_column"))
    missing = [f"{column!r} (data.{key})" for column, key in named if column is not None and column not in features]
    if missing:
        raise ValueError(f"hub: {source} has no column {' or '.join(missing)}; its columns: {listed(features)}")
    audio = features[audio_column]
    if not (
        isinstance(audio, Audio)
        or audio == Value("string")
        or (isinstance(audio, dict) and {"bytes", "path"} <= set(audio))
    ):
        raise ValueError(
            f"hub: the column {audio_column!r} of {source} holds {audio}, not audio (an Audio "
            f"feature, {{bytes, path}} or file paths); set data.audio_column"
        )


HUB_PREFIX = "hf://datasets/"  # a Hub dataset as a URL: the same as its id


def _is_url(source: str) -> bool:
    """An object-store or file URL (s3://, gs://, file:// ...) holding packed shards; not a Hub dataset."""
    return "://" in source and not source.startswith(HUB_PREFIX)


def _url_shards(source: str) -> dict[str, str]:
    """Split -> the glob of its Parquet shards under `source`/data (as `finetune pack` writes them)."""
    import fsspec

    filesystem, root = fsspec.core.url_to_fs(source)
    names = sorted({Path(path).name.split("-")[0] for path in filesystem.glob(f"{root.rstrip('/')}/data/*.parquet")})
    if not names:
        raise ValueError(
            f"no Parquet shards under {source}/data (data/<split>-<i>-of-<n>.parquet, as "
            f"`python -m finetune pack` writes them)"
        )
    return {name: f"{source.rstrip('/')}/data/{name}-*.parquet" for name in names}


def _saved(source: str) -> bool:
    """Whether `source` is a folder written by `save_to_disk` (a dataset or a dataset dict)."""
    return any(os.path.isfile(os.path.join(source, name)) for name in ("dataset_dict.json", "state.json"))


def _load(source: str, config: str | None, streaming: bool) -> Mapping[str, Dataset | IterableDataset]:
    """The dataset's splits by their own names (a saved dataset's made iterable when streaming)."""
    import datasets

    saved = _saved(source)
    if saved and config is not None:
        raise ValueError(f"hub: {source} is a save_to_disk folder, which has no configurations: unset data.config")
    try:
        if saved:
            loaded = datasets.load_from_disk(source)
        elif _is_url(source):
            loaded = datasets.load_dataset("parquet", data_files=_url_shards(source), streaming=streaming)
        else:
            loaded = datasets.load_dataset(source.removeprefix(HUB_PREFIX), config, streaming=streaming)
    except (OSError, ValueError) as err:
        raise ValueError(f"hub: cannot load the dataset {source!r} (data.path): {err}") from err
    loaded = dict(loaded) if isinstance(loaded, Mapping) else {"train": loaded}
    if streaming and saved:
        loaded = {
            name: split.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(split))))
            for name, split in loaded.items()
        }
    return loaded


def _our_splits(source: str, loaded: Mapping) -> dict[str, str]:
    """Our split name -> the dataset's (`dev` -> validation; a lone split of another name -> train)."""
    ours = {}
    for name in loaded:
        split = SPLIT_ALIASES.get(name.lower())
        if split in ours:
            raise ValueError(f"hub: {source} has two {split} splits, {ours[split]} and {name}")
        if split:
            ours[split] = name
    if not ours and len(loaded) == 1:
        ours["train"] = next(iter(loaded))
    if "train" not in ours:
        raise ValueError(f"hub: {source} has no train split; its splits: {listed(loaded)}")
    unused = [name for name in loaded if name not in ours.values()]
    if unused:
        logger.info("hub: %s: not using the split(s) %s", source, ", ".join(unused))
    return ours


@dataclass(frozen=True)
class Columns:
    """How to read one dataset's rows: its columns, label reader, local folder and grouping."""

    audio: str
    label: str
    reader: LabelReader
    base: str | None  # the local dataset folder relative audio paths are under; None for a Hub id
    group: str | None = None  # the column naming each row's artist (album); None: each row its own group
    level: str = "artist"  # data.group_by

    def read(self) -> list[str]:
        """The columns a row is read from."""
        return [self.audio, self.label, *([self.group] if self.group else [])]

    def credit(self, row: dict) -> str:
        """The artist (album) a row names; "" when none."""
        value = row[self.group] if self.group else None
        return "" if value is None else str(value)


def _group_column(features, group_by: str, group_column: str | None) -> str | None:
    """The column groups are read from: data.group_column, else the one named like the level where
    the dataset has it; None for group_by="none"."""
    if group_by == "none":
        return None
    return group_column or (group_by if group_by in features else None)


def _rows(split: Dataset | IterableDataset, columns: Columns) -> Iterator[dict]:
    """The split's audio, label (and group) cells, the audio undecoded ({bytes, path} or a path)."""
    from datasets import Audio, IterableDataset

    cells = split.select_columns(columns.read())
    if isinstance(cells, IterableDataset):
        return iter(cells.decode(False))
    if isinstance(cells.features[columns.audio], Audio):
        cells = cells.cast_column(columns.audio, Audio(decode=False))
    return iter(cells)


def _labelled(name: str, split, columns: Columns) -> list[Labelled]:
    """Labelled rows of one split (absolute paths), the audio of each extracted; unlabelled rows
    are dropped and reported, formats soundfile cannot read refused by their names in the dataset."""
    from datasets import IterableDataset

    rows, unlabelled, names = [], [], []
    total = None if isinstance(split, IterableDataset) else len(split)
    for index, row in enumerate(progress(_rows(split, columns), f"reading {name} audio", total, "rows")):
        label = columns.reader(row[columns.label])
        if label is None:
            unlabelled.append(f"{name}/{index}")
            continue
        names.append(_cell(row[columns.audio])[1] or "")
        where = f"row {index} of split {name}"
        rows.append(
            Labelled(f"{name}/{index}", audio_file(row[columns.audio], columns.base, where), label, columns.credit(row))
        )
    check_formats(f"hub: split {name}", names)
    report("hub", f"rows of {name} without a label", unlabelled)
    return rows


def _grouped(splits: Mapping[str, list[Labelled]], level: str) -> dict[str, list[Labelled]]:
    """The rows with their credits (in `group`) turned into groups over every split."""
    groups = credit_groups({row.id: row.group for rows in splits.values() for row in rows}, level)
    return {split: [replace(row, group=groups[row.id]) for row in rows] for split, rows in splits.items()}


def _relative(splits: Mapping[str, list[Labelled]]) -> tuple[str, dict[str, list[Labelled]]]:
    """The folder all audio files share (the root `assemble` checks), and the rows with paths under it."""
    folders = {os.path.dirname(row.path) for rows in splits.values() for row in rows}
    root = os.path.commonpath(folders) if folders else str(audio_cache())
    return root, {
        split: [replace(row, path=Path(os.path.relpath(row.path, root)).as_posix()) for row in rows]
        for split, rows in splits.items()
    }


def _has_label(row: dict, columns: Columns) -> bool:
    return columns.reader(row[columns.label]) is not None


def _streamed_row(row: dict, name: str, columns: Columns, target: LabelIndex, multi_label: bool) -> dict:
    """The metadata row of one labelled row of a streamed split, its audio extracted as it is read;
    the id is the split and the audio's name in the dataset (its cache file's when it has none)."""
    audio = audio_file(row[columns.audio], columns.base, f"a row of split {name}")
    value = target(columns.reader(row[columns.label]))
    key = "labels" if multi_label else "label"
    track = f"{name}/{_cell(row[columns.audio])[1] or os.path.basename(audio)}"
    return {
        "id": track,
        "group": lone_group(track, columns.credit(row), columns.level),
        "audio": {"bytes": None, "path": audio},
        key: list(value) if multi_label else value,
        "duration": None,
    }


def _stream(name: str, split: IterableDataset, columns: Columns, names: Sequence[str]) -> IterableDataset:
    """The streamed train split: `split`'s rows, unlabelled ones left out and the audio of each
    extracted lazily, with the features of an indexed split (public `filter` / `map`; a `map` given
    its features does not encode the Audio column, so no torchcodec)."""
    from datasets import Audio, Features

    multi_label = columns.reader.multi_label
    features = Features({**split_features(names, multi_label, grouped=True), "audio": Audio(decode=False)})
    source = split.select_columns(columns.read()).decode(False)
    return source.filter(partial(_has_label, columns=columns)).map(
        partial(_streamed_row, name=name, columns=columns, target=LabelIndex(names), multi_label=multi_label),
        remove_columns=columns.read(),
        features=features,
    )  # the source's group column too: `group` replaces it


def _train_labels(split: IterableDataset, columns: Columns) -> set[str]:
    """The classes a streamed train split may hold: a ClassLabel's names, else one pass over its labels."""
    if columns.reader.names is not None:
        return set(columns.reader.names)
    cells = progress(split.select_columns([columns.label]), "reading train labels", None, "rows")
    return label_set(label for row in cells if (label := columns.reader(row[columns.label])) is not None)


def _source(root: str | Path | None, path: str | None) -> str:
    """The dataset to load: `path` (a Hub id or local path) or the local `root`."""
    if root is not None and path is not None:
        raise ValueError("hub: set data.path (a Hub id or a local dataset) or data.root (a local dataset), not both")
    if root is None and path is None:
        raise ValueError("hub: set data.path to a Hub dataset id or a local dataset (data.path=user/name)")
    source = os.path.expanduser(str(root if path is None else path))
    return os.path.abspath(source) if os.path.exists(source) else source


def build(
    root: str | Path | None = None,
    path: str | None = None,
    config: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    allow_missing: bool = False,
    streaming: bool = False,
    group_by: str = "artist",
    group_column: str | None = None,
) -> DatasetDict:
    """The dataset as a DatasetDict (`label` ClassLabel, or `labels` for a list column; `group` the
    row's artist or album group); audio read by our reader from extracted bytes or the dataset's paths."""
    check_level("hub", group_by, GROUP_LEVELS)
    source = _source(root, path)
    loaded = _load(source, config, streaming)
    ours = _our_splits(source, loaded)
    for name in ours.values():
        _check_columns(
            source, loaded[name].features, audio_column, label_column, None if group_by == "none" else group_column
        )
    features = loaded[ours["train"]].features
    columns = Columns(
        audio_column,
        label_column,
        label_reader(source, label_column, features[label_column]),
        source if os.path.isdir(source) else None,
        _group_column(features, group_by, group_column),
        group_by,
    )
    multi_label = columns.reader.multi_label
    indexed = [split for split in ours if not (streaming and split == "train")]
    given = _grouped({split: _labelled(ours[split], loaded[ours[split]], columns) for split in indexed}, group_by)
    if streaming:
        if not (given.get("validation") and given.get("test")):
            raise ValueError(
                f"hub: data.streaming=true streams the train split of a dataset with its own labelled "
                f"validation and test splits; {source} has {', '.join(loaded)}: use "
                f"data.streaming=false (the splits are then carved from train)"
            )
        splits = {"train": [], **given}  # the train split is streamed below
        train_labels = _train_labels(loaded[ours["train"]], columns)
    else:
        splits = complete_splits("hub", given, split_ratios, seed)
        train_labels = label_set(row.label for row in splits["train"])
    occurring = {
        "train": train_labels,
        **{split: label_set(row.label for row in splits[split]) for split in SPLITS[1:]},
    }
    names = class_names("hub", occurring, multi_label, columns.reader.names)
    root, splits = _relative(splits)
    dataset = assemble(
        "hub", root, labelled_clips(splits, names), names, multi_label=multi_label, allow_missing=allow_missing
    )
    if streaming:  # assemble checked validation and test; the train split is streamed from the source
        dataset["train"] = _stream(ours["train"], loaded[ours["train"]], columns, names)
    return dataset
