"""FMA (Defferrard et al. 2017): the Free Music Archive small / medium / large subsets.

Files: `fma_metadata/tracks.csv` (two header rows plus the index-name row), `fma_metadata/
genres.csv`, audio at `fma_<subset>/NNN/NNNNNN.mp3`. Official split from `set.split`, subset
membership from `set.subset` (small within medium within large). Tasks: `genre_top` (single-label)
or `genres_all` (multi-label over genre titles, every ancestor included). Groups: each track's
`artist.id` (or `album.id`) from tracks.csv; the official split keeps artists apart.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from finetune.data.common import SPLITS, Clip, DatasetCard, assemble, check_options, dataset_root, metadata_file, report
from finetune.data.groups import check_level

if TYPE_CHECKING:  # only annotations name them: checking a recipe imports this module without them
    import pandas as pd
    from datasets import DatasetDict

SUBSETS = ("small", "medium", "large")  # each contains the ones before it
TASKS = ("genre_top", "genres_all")
OPTION_CHOICES = {"subset": SUBSETS, "task": TASKS}  # checked by `build`, and by recipes before a run
CARD = DatasetCard("FMA", "the Free Music Archive")  # how model cards name it
SET_SPLITS = {"training": "train", "validation": "validation", "test": "test"}
GROUP_COLUMNS = {"artist": ("artist", "id"), "album": ("album", "id")}  # data.group_by -> tracks.csv column
COLUMNS = (
    ("set", "split"),
    ("set", "subset"),
    ("track", "genre_top"),
    ("track", "genres_all"),
    *GROUP_COLUMNS.values(),
)
# Tracks listed in fma_small whose files hold no audio (FMA issue tracker).
KNOWN_BAD = {f"{t:06d}": "no audio in the FMA release" for t in (98565, 98567, 98569, 99134, 108925, 133297)}


class Genre(NamedTuple):
    title: str
    parent: int  # 0 for the top-level genres


def read_genres(path: str | Path) -> dict[int, Genre]:
    """genres.csv: genre id -> (title, parent id)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {int(row["genre_id"]): Genre(row["title"], int(row["parent"])) for row in csv.DictReader(f)}


def read_tracks(path: str | Path) -> pd.DataFrame:
    """The columns of tracks.csv this loader needs, indexed by track id."""
    import pandas as pd  # here, not above: checking a recipe imports this module

    tracks = pd.read_csv(path, header=[0, 1], index_col=0, low_memory=False)
    absent = [".".join(c) for c in COLUMNS if c not in tracks.columns]
    if absent:
        raise ValueError(f"{path}: columns {absent} are missing; is this FMA's tracks.csv?")
    return tracks[list(COLUMNS)]


def _targets(tracks: pd.DataFrame, task: str, genres_csv: Path) -> tuple[list, list[str]]:
    """Per-track genre titles (a title, a list of titles, or None when unlabelled) and the sorted
    label names."""
    if task == "genre_top":
        titles = [t if isinstance(t, str) else None for t in tracks[("track", "genre_top")]]
        return titles, sorted({t for t in titles if t})
    genres = read_genres(genres_csv)
    titles = []
    for track_id, field in zip(tracks.index, tracks[("track", "genres_all")]):
        ids = json.loads(field)  # e.g. "[21, 811]"
        unknown = [g for g in ids if g not in genres]
        if unknown:
            raise ValueError(f"fma: track {track_id} has genre ids {unknown} absent from {genres_csv}")
        titles.append([genres[g].title for g in ids] or None)
    return titles, sorted({t for track in titles if track for t in track})


def track_groups(tracks: pd.DataFrame, group_by: str) -> list[str]:
    """Each track's group: its artist (album) id as text, "" (its own group) where unknown or for
    group_by="none"."""
    if group_by == "none":
        return [""] * len(tracks)
    ids = tracks[GROUP_COLUMNS[group_by]]
    return [f"{group_by} {int(v)}" if known else "" for v, known in zip(ids, ids.notna() & (ids >= 0))]


def multi_label_task(task: str, **options) -> bool:
    """FMA's `genres_all` task is multi-label, `genre_top` single-label."""
    return task == "genres_all"


def split_detail(subset: str, task: str, **options) -> str:
    """What names the split beside its scheme, for published figures (`finetune.published.split_key`)."""
    return f"{subset}-{task}"


def build(
    root: str | Path,
    subset: str = "small",
    task: str = "genre_top",
    allow_missing: bool = False,
    streaming: bool = False,
    group_by: str = "artist",
) -> DatasetDict:
    """FMA as a DatasetDict: `label` (genre_top) or `labels` (genres_all) over genre titles;
    `group`: the artist (album) id, `track_groups`."""
    root = dataset_root("fma", root)
    check_options(OPTION_CHOICES, subset=subset, task=task)
    check_level("fma", group_by, tuple(GROUP_COLUMNS))
    holds = "fma_metadata/ (tracks.csv, genres.csv) and fma_<subset>/"
    tracks = read_tracks(metadata_file("fma", root, "fma_metadata/tracks.csv", holds))
    rank = tracks[("set", "subset")].map({name: i for i, name in enumerate(SUBSETS)})
    tracks = tracks[rank <= SUBSETS.index(subset)]
    titles, names = _targets(tracks, task, metadata_file("fma", root, "fma_metadata/genres.csv", holds))
    index = {name: i for i, name in enumerate(names)}
    splits, unlabelled = {split: [] for split in SPLITS}, []
    for track_id, set_split, title, group in zip(
        tracks.index, tracks[("set", "split")], titles, track_groups(tracks, group_by)
    ):
        clip_id = f"{track_id:06d}"
        if set_split not in SET_SPLITS:
            raise ValueError(f"fma: track {clip_id} has set.split={set_split!r}, not one of {list(SET_SPLITS)}")
        if title is None:
            unlabelled.append(clip_id)
            continue
        target = index[title] if task == "genre_top" else tuple(sorted(index[t] for t in title))
        path = f"fma_{subset}/{clip_id[:3]}/{clip_id}.mp3"
        splits[SET_SPLITS[set_split]].append(Clip(clip_id, path, target, group))
    report("fma", f"tracks without {task}", unlabelled, logging.INFO)
    return assemble(
        "fma",
        root,
        splits,
        names,
        multi_label=multi_label_task(task),
        allow_missing=allow_missing,
        known_bad=KNOWN_BAD,
        streaming=streaming,
    )
