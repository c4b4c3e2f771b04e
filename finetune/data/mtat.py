"""MagnaTagATune (Law et al. 2009): 25,863 clips of 29 s with 188 binary tags, multi-label.

Files: `annotations_final.csv` (tab-separated, every field double-quoted; header `clip_id`,
188 tag names, `mp3_path` such as `f/<name>.mp3`) and the mp3 folders `0`..`f`, beside it or in an
`audio/` folder beside it (the original project's layout). Tags: the top N by
frequency over all clips (ties broken by column order). Splits by folder: 0-b train, c validation,
d-f test; `standard` keeps clips with at least one selected tag (Lee et al. 2017, Won et al. 2020:
15,244 / 1,529 / 4,332 for the top 50), `pons` keeps every clip (Pons et al.); neither separates
artists. Groups: each clip's artist (or album) from `clip_info_final.csv` beside the annotations
(tab-separated: clip_id, track_number, title, artist, album, url, segmentStart, segmentEnd,
original_url, mp3_path); without that file each clip is its own group.
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finetune.data.common import (
    SPLITS,
    Clip,
    DatasetCard,
    assemble,
    check_options,
    dataset_root,
    layout_folder,
    metadata_file,
)
from finetune.data.groups import check_level, credit_groups

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

logger = logging.getLogger("finetune.data")

ANNOTATIONS = "annotations_final.csv"
CLIP_INFO = "clip_info_final.csv"  # each clip's song, album and artist
SPLIT_SCHEMES = ("standard", "pons")
OPTION_CHOICES = {"split_scheme": SPLIT_SCHEMES}  # checked by `build`, and by recipes before a run
CARD = DatasetCard("MagnaTagATune", "MagnaTagATune")  # how model cards name it
LAYOUTS = ("", "audio")  # folders tried in turn for the mp3 folders 0..f, relative to the root
HOLDS = f"{ANNOTATIONS} beside the mp3 folders 0..f or beside an audio/ folder holding them"
FOLDER_SPLITS = {**dict.fromkeys("0123456789ab", "train"), "c": "validation", **dict.fromkeys("def", "test")}
KNOWN_BAD = dict.fromkeys(("35644", "55753", "57881"), "empty mp3 in the MTAT release")


@dataclass(frozen=True)
class Annotations:
    """The parsed annotations_final.csv."""

    clip_ids: list[str]
    paths: list[str]  # mp3 paths relative to the root, e.g. "f/american_bach_...-30-59.mp3"
    tag_names: list[str]
    tags: np.ndarray  # (N, T) bool


def read_annotations(path: str | Path) -> Annotations:
    """Parse annotations_final.csv; a malformed header or row is an error naming the line."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0][0] != "clip_id" or rows[0][-1] != "mp3_path" or len(rows[0]) < 3:
        raise ValueError(f"{path}: expected a tab-separated header 'clip_id', tag names, 'mp3_path'")
    width = len(rows[0])
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: {len(row)} fields, the header has {width}")
    body = rows[1:]
    cells = np.array([r[1:-1] for r in body], dtype="U1").reshape(len(body), width - 2)  # (N, T)
    return Annotations(
        clip_ids=[r[0] for r in body], paths=[r[-1] for r in body], tag_names=rows[0][1:-1], tags=cells == "1"
    )


def read_clip_info(path: str | Path) -> dict[str, tuple[str, str]]:
    """clip_info_final.csv: clip id -> (artist, album); a file without those columns is an error."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        absent = [c for c in ("clip_id", "artist", "album") if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{path}: no column(s) {', '.join(absent)}; is this MTAT's {CLIP_INFO} (tab-separated)?")
        return {row["clip_id"]: (row["artist"] or "", row["album"] or "") for row in reader}


def clip_groups(root: str, clip_ids: list[str], group_by: str) -> dict[str, str]:
    """Clip id -> its artist (or artist / album) group from clip_info_final.csv; {} (each clip its
    own group) for group_by="none" or without that file."""
    path = Path(root) / CLIP_INFO
    if group_by == "none":
        return {}
    if not path.is_file():
        logger.info(
            "mtat: no %s under %s: each clip is its own group (clips of one song or artist may sit on "
            "both sides of a split)",
            CLIP_INFO,
            root,
        )
        return {}
    info = read_clip_info(path)
    credits = {c: info.get(c, ("", "")) for c in clip_ids}
    return credit_groups(
        {c: credit[0] if group_by == "artist" else " / ".join(filter(None, credit)) for c, credit in credits.items()},
        group_by,
    )


def top_tags(tags: np.ndarray, count: int) -> list[int]:
    """Columns of the `count` most frequent tags in (N, T) `tags`, most frequent first; ties
    keep column order."""
    return np.argsort(-tags.sum(axis=0), kind="stable")[:count].tolist()


def multi_label_task(**options) -> bool:
    """MTAT is multi-label (tags), whatever its options."""
    return True


def split_detail(tags: int, **options) -> str:
    """What names the split beside its scheme, for published figures (`finetune.published.split_key`)."""
    return f"top{tags}"


def build(
    root: str | Path,
    tags: int = 50,
    split_scheme: str = "standard",
    allow_missing: bool = False,
    streaming: bool = False,
    group_by: str = "artist",
) -> DatasetDict:
    """MTAT as a DatasetDict (`labels`: indices into the top-`tags` tags, most frequent first;
    `group`: the clip's artist or album, `clip_groups`)."""
    root = dataset_root("mtat", root)
    check_options(OPTION_CHOICES, split_scheme=split_scheme)
    check_level("mtat", group_by, ("artist", "album"))
    table = read_annotations(metadata_file("mtat", root, ANNOTATIONS, HOLDS))
    total = len(table.tag_names)
    if isinstance(tags, bool) or not isinstance(tags, int) or not 1 <= tags <= total:
        raise ValueError(
            f"mtat: tags={tags!r} is not valid; choose an integer from 1 to {total} "
            f"(50: the standard top-50, {total}: all tags)"
        )
    columns = top_tags(table.tags, tags)
    selected = table.tags[:, columns]  # (N, tags) bool
    folder = layout_folder("mtat", root, LAYOUTS, FOLDER_SPLITS)
    if folder is None:
        raise FileNotFoundError(
            f"mtat: none of the mp3 folders 0..f is in {root} or "
            f"{os.path.join(root, 'audio')}; data.root should be the folder "
            f"holding {HOLDS}"
        )
    groups = clip_groups(root, table.clip_ids, group_by)
    splits = {split: [] for split in SPLITS}
    for clip_id, path, row in zip(table.clip_ids, table.paths, selected):
        split = FOLDER_SPLITS.get(path.split("/")[0])
        if split is None:
            raise ValueError(f"mtat: clip {clip_id} has mp3_path {path!r} outside the folders 0..f")
        target = tuple(np.flatnonzero(row).tolist())
        if target or split_scheme == "pons":
            splits[split].append(Clip(clip_id, posixpath.join(folder, path), target, groups.get(clip_id, "")))
    return assemble(
        "mtat",
        root,
        splits,
        [table.tag_names[c] for c in columns],
        multi_label=multi_label_task(),
        allow_missing=allow_missing,
        known_bad=KNOWN_BAD,
        streaming=streaming,
    )
