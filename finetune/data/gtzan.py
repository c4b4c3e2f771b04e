"""GTZAN (Tzanetakis 2002): 10 genres x 100 clips of 30 s, single-label.

Accepted layouts: `genres/<genre>/<genre>.000NN.au` (original), `genres_original/<genre>/...wav`
(the common copy) and `<root>/<genre>/...`. Splits: the published fault-filtered (default) or
stratified lists, or a seeded per-genre random 70/15/15 split (the one custom genre lists use).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from finetune.data.audio import AUDIO_EXTENSIONS
from finetune.data.common import (SPLITS, Clip, DatasetCard, assemble, check_options, dataset_root,
                                  layout_folder, listing, stratified_split)
from finetune.data.gtzan_splits import FAULT_FILTERED, SPLIT_CODES, STRATIFIED

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SPLIT_SCHEMES = ("fault_filtered", "stratified", "random")
OPTION_CHOICES = {"split_scheme": SPLIT_SCHEMES}  # checked by `build`, and by recipes before a run
CARD = DatasetCard("marsyas/gtzan", "GTZAN")  # how model cards name it
LAYOUTS = ("genres", "genres_original", "")  # audio folders tried in turn, relative to the root
RANDOM_FRACTIONS = (0.70, 0.15, 0.15)  # train / validation / test


def published_split(scheme: str) -> dict[str, list[str]]:
    """Clip ids ("blues/blues.00012") of each split of a published scheme."""
    table = {"fault_filtered": FAULT_FILTERED, "stratified": STRATIFIED}[scheme]
    ids = {split: [] for split in SPLITS}
    for genre, codes in table.items():
        for number, code in enumerate(codes):
            if code in SPLIT_CODES:
                ids[SPLIT_CODES[code]].append(f"{genre}/{genre}.{number:05d}")
    return ids


def random_split(ids: Sequence[str], genres: Sequence[str], seed: int) -> dict[str, list[str]]:
    """Seeded 70/15/15 split of `ids` within each genre (`common.stratified_split`), genre by genre."""
    return stratified_split({i: genre for genre in genres for i in ids if i.split("/")[0] == genre},
                            RANDOM_FRACTIONS, seed)


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


def build(root: str | Path, split_scheme: str = "fault_filtered", seed: int = 0,
          allow_missing: bool = False, genres: Sequence[str] | None = None,
          streaming: bool = False) -> DatasetDict:
    """GTZAN as a DatasetDict (`label`: ClassLabel over `genres`, default the 10 GTZAN genres);
    `streaming`: the train split is streamed (`finetune.data.common.assemble`)."""
    root = dataset_root("gtzan", root)
    check_options(OPTION_CHOICES, split_scheme=split_scheme)
    names = list(GENRES if genres is None else genres)
    if not names or len(set(names)) != len(names) or any("/" in g for g in names):
        raise ValueError(f"gtzan: genres must be distinct folder names, got {names}")
    if split_scheme != "random" and names != list(GENRES):
        raise ValueError(f"gtzan: split_scheme={split_scheme!r} lists the 10 GTZAN genres only; "
                         f"use split_scheme='random' with custom genres")
    folder = layout_folder("gtzan", root, LAYOUTS, names)
    if folder is None:
        raise FileNotFoundError(
            f"gtzan: no genre folders ({', '.join(names[:3])}, ...) under {root}, "
            f"{os.path.join(root, 'genres')} or {os.path.join(root, 'genres_original')}")
    found = _discover(root, folder, names)
    if split_scheme == "random":
        split_ids = random_split(list(found), names, seed)
    else:
        split_ids = published_split(split_scheme)
    ext = next((os.path.splitext(p)[1] for p in found.values()), ".wav")  # to name missing files
    splits = {split: [Clip(i, found.get(i, posixpath.join(folder, i + ext)), names.index(i.split("/")[0]))
                      for i in ids] for split, ids in split_ids.items()}
    return assemble("gtzan", root, splits, names, multi_label=multi_label_task(), allow_missing=allow_missing,
                    streaming=streaming)
