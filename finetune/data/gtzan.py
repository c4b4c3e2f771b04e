"""GTZAN (Tzanetakis 2002): 10 genres x 100 clips of 30 s, single-label.

Accepted layouts: `genres/<genre>/<genre>.000NN.au` (original), `genres_original/<genre>/...wav`
(the common copy) and `<root>/<genre>/...`. Splits: the published fault-filtered (default) or
stratified lists, or a seeded per-genre random 70/15/15 split (the one custom genre lists use)
that deals whole artists. Groups: each track's artist from Sturm's index (`gtzan_artists.tsv`, our
encoding of it), collaborations joined (`finetune.data.groups`); a track without one is its own.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.data.audio import AUDIO_EXTENSIONS
from finetune.data.common import (
    SPLITS,
    Clip,
    DatasetCard,
    assemble,
    check_options,
    dataset_root,
    layout_folder,
    listing,
    stratified_split,
)
from finetune.data.groups import artist_groups, check_level
from finetune.data.gtzan_splits import FAULT_FILTERED, SPLIT_CODES, STRATIFIED

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SPLIT_SCHEMES = ("fault_filtered", "stratified", "random")
OPTION_CHOICES = {"split_scheme": SPLIT_SCHEMES}  # checked by `build`, and by recipes before a run
CARD = DatasetCard("marsyas/gtzan", "GTZAN")  # how model cards name it
LAYOUTS = ("genres", "genres_original", "")  # audio folders tried in turn, relative to the root
RANDOM_FRACTIONS = (0.70, 0.15, 0.15)  # train / validation / test
ARTISTS = Path(__file__).with_name("gtzan_artists.tsv")  # track ("blues.00000") <TAB> artist as credited


def read_artists(path: str | Path = ARTISTS) -> dict[str, str]:
    """GTZAN track ("blues.00000") -> its artist as Sturm's index credits it (tracks without one absent)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t") for line in lines if line and not line.startswith("#"))


@cache
def artist_group_table() -> dict[str, str]:
    """GTZAN track -> artist group, over all 1000 tracks (collaborations join their artists)."""
    return artist_groups(read_artists())


def track_groups(ids: Sequence[str], group_by: str) -> dict[str, str]:
    """Clip id ("blues/blues.00012") -> its artist group; the id itself for a track without an
    artist, a file GTZAN does not have, or group_by="none"."""
    table = artist_group_table() if group_by == "artist" else {}
    return {i: table.get(posixpath.basename(i), i) for i in ids}


def published_split(scheme: str) -> dict[str, list[str]]:
    """Clip ids ("blues/blues.00012") of each split of a published scheme."""
    table = {"fault_filtered": FAULT_FILTERED, "stratified": STRATIFIED}[scheme]
    ids = {split: [] for split in SPLITS}
    for genre, codes in table.items():
        for number, code in enumerate(codes):
            if code in SPLIT_CODES:
                ids[SPLIT_CODES[code]].append(f"{genre}/{genre}.{number:05d}")
    return ids


def random_split(
    ids: Sequence[str], genres: Sequence[str], seed: int, groups: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """Seeded 70/15/15 split of `ids` within each genre (`common.stratified_split`), genre by genre,
    whole `groups` (id -> artist group) to one split."""
    return stratified_split(
        {i: genre for genre in genres for i in ids if i.split("/")[0] == genre}, RANDOM_FRACTIONS, seed, groups
    )


def _discover(root: str, folder: str, genres: Sequence[str]) -> dict[str, str]:
    """Clip id ("<genre>/<file stem>") -> path relative to the root, for the audio files present."""
    found = {}
    for genre in genres:
        for name in sorted(listing("gtzan", os.path.join(root, folder, genre))):
            stem, ext = os.path.splitext(name)
            if not name.startswith(".") and ext.lower() in AUDIO_EXTENSIONS:
                found[f"{genre}/{stem}"] = posixpath.join(folder, genre, name)
    return found


def multi_label_task(**options) -> bool:
    """GTZAN is single-label (one genre a track), whatever its options."""
    return False


def build(
    root: str | Path,
    split_scheme: str = "fault_filtered",
    seed: int = 0,
    allow_missing: bool = False,
    genres: Sequence[str] | None = None,
    streaming: bool = False,
    group_by: str = "artist",
) -> DatasetDict:
    """GTZAN as a DatasetDict (`label`: ClassLabel over `genres`, default the 10 GTZAN genres;
    `group`: the artist group, or each track its own with group_by="none"); `streaming`: the train
    split is streamed (`finetune.data.common.assemble`)."""
    root = dataset_root("gtzan", root)
    check_options(OPTION_CHOICES, split_scheme=split_scheme)
    check_level("gtzan", group_by, ("artist",))
    names = list(GENRES if genres is None else genres)
    if not names or len(set(names)) != len(names) or any("/" in g for g in names):
        raise ValueError(f"gtzan: genres must be distinct folder names, got {names}")
    if split_scheme != "random" and names != list(GENRES):
        raise ValueError(
            f"gtzan: split_scheme={split_scheme!r} lists the 10 GTZAN genres only; "
            f"use split_scheme='random' with custom genres"
        )
    folder = layout_folder("gtzan", root, LAYOUTS, names)
    if folder is None:
        raise FileNotFoundError(
            f"gtzan: no genre folders ({', '.join(names[:3])}, ...) under {root}, "
            f"{os.path.join(root, 'genres')} or {os.path.join(root, 'genres_original')}"
        )
    found = _discover(root, folder, names)
    if split_scheme == "random":
        split_ids = random_split(list(found), names, seed, track_groups(list(found), group_by))
    else:
        split_ids = published_split(split_scheme)
    groups = track_groups([i for ids in split_ids.values() for i in ids], group_by)
    ext = next((os.path.splitext(p)[1] for p in found.values()), ".wav")  # to name missing files
    splits = {
        split: [
            Clip(i, found.get(i, posixpath.join(folder, i + ext)), names.index(i.split("/")[0]), groups[i]) for i in ids
        ]
        for split, ids in split_ids.items()
    }
    return assemble(
        "gtzan", root, splits, names, multi_label=multi_label_task(), allow_missing=allow_missing, streaming=streaming
    )
