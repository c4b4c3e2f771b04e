"""Your own folder of audio (`data.name=folder`), in the `audiofolder` conventions of `datasets`.

`root` holds either layout:
- one subfolder per class: `<class>/**/<file>`; the class is the name of the top subfolder.
- `metadata.csv` with a `file_name` column (paths relative to the folder of the csv) and a label
  column (`label_column`, default `label`). Multi-label: a cell lists tags separated by ";"
  (`rock;guitar`) or as a JSON list (`["rock", "guitar"]`); one such cell makes the whole column
  tags, and an empty cell then means no tag.
Splits: `train/`, `validation/` (or `valid/`, `val/`, `dev/`, `eval/`) and `test/` subfolders, each in
either layout, or one root `metadata.csv` whose `file_name` paths start with the split folder.
Splits the folder lacks are carved from train (`common.complete_splits`: seeded, stratified by
`split_ratios`, whole artists to one split). Classes are sorted names (numbers numerically), shared
by all splits.
Groups (`group_by`: artist, album or none): the metadata.csv column `group_column` (default: named
like the level, `artist` or `album`; a blank cell: the file is its own group), or in class folders
the sub-folders `<class>/<artist>/<album>/...` (a file right in its class folder is its own group).

Files: any format soundfile reads. A file in a format it cannot read (m4a, aac, wma ...) refuses
the whole dataset, naming the files and the ffmpeg command that converts them: dropping them
would train on part of the data without anyone asking. Other files (images, text) are ignored.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from finetune.data.audio import AUDIO_EXTENSIONS, UNSUPPORTED_EXTENSIONS
from finetune.data.common import (
    SPLIT_ALIASES,
    Labelled,
    assemble,
    check_formats,
    class_names,
    complete_splits,
    dataset_root,
    label_set,
    labelled_clips,
    listing,
)
from finetune.data.groups import GROUP_LEVELS, check_level, credit_groups

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

OPTION_CHOICES = {}  # no option with a fixed set of values
CARD = None  # a model card names the user's own data (finetune.export.dataset_id)
METADATA = "metadata.csv"
NAME_COLUMN = "file_name"


class Entry(NamedTuple):
    """One file of the folder, before its label is parsed."""

    path: str  # relative to the root (or to its metadata.csv's folder while read)
    cell: str  # the label cell, or the class folder's name
    credit: str = ""  # the artist (album) it is by; "" unknown


class Grouping(NamedTuple):
    """Where a folder's groups come from."""

    level: str  # data.group_by
    column: str | None  # the metadata.csv column; None for group_by="none"
    required: bool  # the column was named by data.group_column, so it must exist


def _split_folders(root: str) -> dict[str, str]:
    """Our split name -> the subfolder of `root` that holds it (`val/` -> validation)."""
    found = {}
    for name in sorted(listing("folder", root)):
        split = SPLIT_ALIASES.get(name.lower())
        if split and os.path.isdir(os.path.join(root, name)):
            if split in found:
                raise ValueError(
                    f"folder: both {found[split]}/ and {name}/ under {root} hold the {split} split; keep one"
                )
            found[split] = name
    return found


def _tags(cell: str) -> tuple[str, ...] | None:
    """The tags of a multi-label cell (`a;b` or `["a", "b"]`), None for a single label."""
    text = cell.strip()
    if text.startswith("["):
        try:
            tags = json.loads(text)
        except ValueError as err:
            raise ValueError(f"not a JSON list of tags: {text!r} ({err})") from None
        return tuple(sorted({str(tag).strip() for tag in tags} - {""}))
    if ";" in text:
        return tuple(sorted({tag.strip() for tag in text.split(";")} - {""}))
    return None


def _read_metadata(path: Path, label_column: str, grouping: Grouping) -> list[Entry]:
    """The rows of a metadata.csv; missing columns name the ones it has."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        wanted = [NAME_COLUMN, label_column, *([grouping.column] if grouping.required else [])]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ValueError(
                f"folder: {path} has no column {', '.join(map(repr, missing))}; its columns: "
                f"{', '.join(columns) or 'none'} (set data.label_column to the label column, "
                f"data.group_column to the artist column)"
            )
        credit = grouping.column if grouping.column in columns else None
        return [
            Entry(
                row[NAME_COLUMN].strip().replace("\\", "/"),
                row[label_column] or "",
                (row[credit] or "").strip() if credit else "",
            )
            for row in reader
        ]


def _folder_credit(parts: Sequence[str], level: str) -> str:
    """The artist (`<class>/<artist>/...`) or artist/album a file's sub-folders below its class name."""
    depth = {"artist": 1, "album": 2}.get(level, 0)
    return "/".join(parts[:depth]) if len(parts) >= depth else ""


def _class_files(root: str, base: str, level: str) -> list[Entry]:
    """The audio files in the class subfolders of `root/base`, searched recursively, each with its
    class and its sub-folders' credit (`_folder_credit`); hidden files and files that are not
    audio are left out."""
    keep = AUDIO_EXTENSIONS + UNSUPPORTED_EXTENSIONS  # the unsupported ones are refused later, by name
    files = []
    for name in sorted(listing("folder", os.path.join(root, base))):
        top = os.path.join(root, base, name)
        if name.startswith(".") or not os.path.isdir(top):
            continue
        for folder, subfolders, names in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            rel = Path(os.path.relpath(folder, root)).as_posix()
            credit = _folder_credit(Path(os.path.relpath(folder, top)).parts, level)
            files += [
                Entry(posixpath.join(rel, n), name, credit)
                for n in sorted(names)
                if not n.startswith(".") and posixpath.splitext(n)[1].lower() in keep
            ]
    return files


def _entries(root: str, base: str, label_column: str, grouping: Grouping) -> list[Entry]:
    """The files of `root/base` (paths relative to `root`): its metadata.csv, else its class folders."""
    metadata = Path(root, base, METADATA)
    if metadata.is_file():
        return [
            entry._replace(path=posixpath.normpath(posixpath.join(base, entry.path)))
            for entry in _read_metadata(metadata, label_column, grouping)
        ]
    files = _class_files(root, base, grouping.level)
    if not files:
        raise FileNotFoundError(
            f"folder: no audio under {os.path.join(root, base)}: expected one subfolder "
            f"of audio files per class, or a {METADATA} with {NAME_COLUMN} and "
            f"{label_column} columns"
        )
    return files


def _split_of_path(path: str) -> str | None:
    """The split a root metadata.csv path names by its first folder (`val/x.wav` -> validation)."""
    first = path.split("/", 1)[0].lower()
    return SPLIT_ALIASES.get(first) if "/" in path else None


def _given_splits(root: str, label_column: str, grouping: Grouping) -> dict[str, list[Entry]]:
    """The folder's own splits (only "train" when it has none)."""
    folders = _split_folders(root)
    if folders and not Path(root, METADATA).is_file():
        return {split: _entries(root, folder, label_column, grouping) for split, folder in folders.items()}
    rows = _entries(root, "", label_column, grouping)
    named = [_split_of_path(row.path) for row in rows]
    if all(split is None for split in named):
        return {"train": rows}
    if None in named:
        stray = rows[named.index(None)].path
        raise ValueError(
            f"folder: {root}/{METADATA} names files inside split folders and outside them "
            f"(e.g. {stray}); put every file in train/, validation/ or test/, or none"
        )
    given = {}
    for row, split in zip(rows, named):
        given.setdefault(split, []).append(row)
    return given


def _labels(given: dict[str, list[Entry]], root: str, level: str) -> dict[str, list[Labelled]]:
    """Rows with their labels parsed (tags everywhere when any cell holds a tag list, else one class)
    and their groups."""
    try:
        tags = {(split, row.path): _tags(row.cell) for split, rows in given.items() for row in rows}
    except ValueError as err:
        raise ValueError(f"folder: {root}/{METADATA}: {err}") from None
    multi_label = any(t is not None for t in tags.values())
    groups = credit_groups({row.path: row.credit for rows in given.values() for row in rows}, level)
    splits = {}
    for split, rows in given.items():
        splits[split] = []
        for path, cell, _ in rows:
            label = (tags[split, path] or tuple({cell.strip()} - {""})) if multi_label else cell.strip()
            if label == "":
                raise ValueError(f"folder: {path} has an empty label in {METADATA}; give every file a class")
            splits[split].append(Labelled(path, path, label, groups[path]))
    return splits


def build(
    root: str | Path,
    label_column: str = "label",
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    allow_missing: bool = False,
    streaming: bool = False,
    group_by: str = "artist",
    group_column: str | None = None,
) -> DatasetDict:
    """The folder as a DatasetDict (`label` ClassLabel over the sorted classes, or `labels` for
    tags; `group`: the file's artist or album group); ids are the files' paths relative to `root`;
    `streaming`: the train split is streamed (`finetune.data.common.assemble`)."""
    check_level("folder", group_by, GROUP_LEVELS)
    root = dataset_root("folder", root)
    column = None if group_by == "none" else group_column or group_by
    grouping = Grouping(group_by, column, group_column is not None and group_by != "none")
    given = _labels(_given_splits(root, label_column, grouping), root, group_by)
    check_formats("folder", [row.path for rows in given.values() for row in rows])
    splits = complete_splits("folder", given, split_ratios, seed)
    multi_label = any(isinstance(row.label, tuple) for rows in splits.values() for row in rows)
    occurring = {split: label_set(row.label for row in rows) for split, rows in splits.items()}
    names = class_names("folder", occurring, multi_label)
    return assemble(
        "folder",
        root,
        labelled_clips(splits, names),
        names,
        multi_label=multi_label,
        allow_missing=allow_missing,
        streaming=streaming,
    )
