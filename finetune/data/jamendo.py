"""MTG-Jamendo (Bogdanov et al. 2019): 55,000 full tracks under Creative Commons with genre,
instrument and mood/theme tags, multi-label, in five official artist-disjoint splits.

Files under data.root: the metadata of the dataset's repository (a clone of
github.com/MTG/mtg-jamendo-dataset), `data/splits/split-<N>/autotagging_<subset>-{train,validation,
test}.tsv` (tab-separated, header TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS; PATH such as
`41/241.mp3`; the track's tags follow DURATION, one per field, such as `genre---rock`), and the audio
as its download script unpacks it: the folders `00`..`99` of `<id>.mp3` (full quality) or
`<id>.low.mp3` (the low-quality download), in the first of `audio/`, `audio-low/` or data.root itself
that holds them. Subsets: top50tags, genre, instrument, moodtheme, and all (`autotagging-*.tsv`: every
tag of the three categories). Tags: the subset's published list in its published (alphabetical)
order, the same for every split, so models trained on any split share their outputs. Groups: each
track's ARTIST_ID (or ALBUM_ID). A partial audio download loads what is there (allow_missing defaults
to true here) and logs how many tracks of each split have no file; a run on part of the published
test split is then marked as not comparable with published figures (`finetune.published`).
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from finetune.data.common import (
    SPLITS,
    Clip,
    DatasetCard,
    assemble,
    check_options,
    dataset_root,
    layout_folder,
    listing,
    metadata_file,
)
from finetune.data.groups import check_level

if TYPE_CHECKING:  # only annotations name it: checking a recipe imports this module without datasets
    from datasets import DatasetDict

logger = logging.getLogger("finetune.data")

CARD = DatasetCard("MTG-Jamendo", "MTG-Jamendo")  # how model cards name it
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")  # then the tags, one per field
SPLIT_NUMBERS = (0, 1, 2, 3, 4)
# subset -> the stem of its split files
SUBSET_FILES = {
    "top50tags": "autotagging_top50tags",
    "genre": "autotagging_genre",
    "instrument": "autotagging_instrument",
    "moodtheme": "autotagging_moodtheme",
    "all": "autotagging",
}
SUBSETS = tuple(SUBSET_FILES)
OPTION_CHOICES = {"subset": SUBSETS}  # checked by `build`, and by recipes before a run
AUDIO_LAYOUTS = ("audio", "audio-low", "")  # folders tried in turn for 00..99, relative to the root
AUDIO_FOLDERS = [f"{n:02d}" for n in range(100)]
LOW_QUALITY = ".low.mp3"  # the low-quality download names `NN/<id>.low.mp3` what PATH calls `NN/<id>.mp3`
HOLDS = "data/splits/split-<N>/ (a clone of github.com/MTG/mtg-jamendo-dataset) and the audio folders 00..99"

# The tags of each category as the split files use them (data/tags/ and the files of
# MTG/mtg-jamendo-dataset at commit 1b4fa8c), alphabetical. Mood/theme: the published
# `moodtheme_split.txt`, which is `moodtheme.txt` without ambiental, horror and mellow (discarded
# so that every split has every tag).
CATEGORY_TAGS = {
    "genre": """60s 70s 80s 90s acidjazz alternative alternativerock ambient atmospheric blues bluesrock
        bossanova breakbeat celtic chanson chillout choir classical classicrock club contemporary country
        dance darkambient darkwave deephouse disco downtempo drumnbass dub dubstep easylistening edm
        electronic electronica electropop ethno eurodance experimental folk funk fusion groove grunge hard
        hardrock hiphop house idm improvisation indie industrial instrumentalpop instrumentalrock jazz
        jazzfusion latin lounge medieval metal minimal newage newwave orchestral pop popfolk poprock
        postrock progressive psychedelic punkrock rap reggae rnb rock rocknroll singersongwriter soul
        soundtrack swing symphonic synthpop techno trance triphop world worldfusion""",
    "instrument": """accordion acousticbassguitar acousticguitar bass beat bell bongo brass cello clarinet
        classicalguitar computer doublebass drummachine drums electricguitar electricpiano flute guitar
        harmonica harp horn keyboard oboe orchestra organ pad percussion piano pipeorgan rhodes sampler
        saxophone strings synthesizer trombone trumpet viola violin voice""",
    "mood/theme": """action adventure advertising background ballad calm children christmas commercial cool
        corporate dark deep documentary drama dramatic dream emotional energetic epic fast film fun funny
        game groovy happy heavy holiday hopeful inspiring love meditative melancholic melodic motivational
        movie nature party positive powerful relaxing retro romantic sad sexy slow soft soundscape space
        sport summer trailer travel upbeat uplifting""",
}
# The published top-50 (data/tags/top50.txt), by category, in its order.
TOP50 = {
    "genre": """alternative ambient atmospheric chillout classical dance downtempo easylistening electronic
        experimental folk funk hiphop house indie instrumentalpop jazz lounge metal newage orchestral pop
        popfolk poprock reggae rock soundtrack techno trance triphop world""",
    "instrument": """acousticguitar bass computer drummachine drums electricguitar electricpiano guitar
        keyboard piano strings synthesizer violin voice""",
    "mood/theme": "emotional energetic film happy relaxing",
}

# Published track counts (train, validation, test) of every split file (the repository's files at
# commit 1b4fa8c; tests/test_data_jamendo.py counts them where the full metadata is present).
PUBLISHED_COUNTS = {
    (0, "top50tags"): (32136, 10888, 11356),
    (0, "genre"): (32572, 11043, 11479),
    (0, "instrument"): (14395, 5466, 5115),
    (0, "moodtheme"): (9949, 3802, 4231),
    (1, "top50tags"): (32395, 10619, 11366),
    (1, "genre"): (32746, 10833, 11515),
    (1, "instrument"): (14943, 4960, 5073),
    (1, "moodtheme"): (10190, 3594, 4198),
    (2, "top50tags"): (32010, 11961, 10409),
    (2, "genre"): (32360, 12185, 10549),
    (2, "instrument"): (14702, 5066, 5208),
    (2, "moodtheme"): (10484, 4085, 3413),
    (3, "top50tags"): (33173, 10468, 10739),
    (3, "genre"): (33515, 10656, 10923),
    (3, "instrument"): (14875, 5068, 5033),
    (3, "moodtheme"): (10920, 3500, 3562),
    (4, "top50tags"): (30868, 11593, 11919),
    (4, "genre"): (31305, 11804, 11985),
    (4, "instrument"): (14829, 5159, 4988),
    (4, "moodtheme"): (10241, 3706, 4035),
}


def category_tags(category: str, names: str) -> list[str]:
    """`names` (space-separated) as the split files write them: `<category>---<name>`."""
    return [f"{category}---{name}" for name in names.split()]


def subset_tags(subset: str) -> list[str]:
    """The tag vocabulary of `subset`, in its published order."""
    lists = TOP50 if subset == "top50tags" else CATEGORY_TAGS
    categories = {"genre": ["genre"], "instrument": ["instrument"], "moodtheme": ["mood/theme"]}
    return [tag for category in categories.get(subset, list(lists)) for tag in category_tags(category, lists[category])]


class Track(NamedTuple):
    """One row of a split file."""

    id: str
    artist: str
    album: str
    path: str  # as PATH writes it, e.g. "41/241.mp3"
    tags: tuple[str, ...]


def read_split_file(path: str | Path, vocabulary: list[str]) -> list[Track]:
    """The rows of one split file; a malformed header or row, or a tag outside `vocabulary`, is an
    error naming the file and line."""
    known = set(vocabulary)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or tuple(rows[0][: len(HEADER)]) != HEADER:
        raise ValueError(
            f"{path}: expected a tab-separated header {', '.join(HEADER)}, TAGS; is this an MTG-Jamendo split file?"
        )
    tracks = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= len(HEADER) or not row[3].endswith(".mp3"):
            raise ValueError(
                f"{path}, line {line}: expected {', '.join(HEADER)} (PATH such as 41/241.mp3) "
                f"and at least one tag, tab-separated"
            )
        unknown = [tag for tag in row[len(HEADER) :] if tag not in known]
        if unknown:
            raise ValueError(
                f"{path}, line {line}: tag {unknown[0]!r} is not one of this subset's "
                f"{len(vocabulary)} tags; is the file of another subset?"
            )
        tracks.append(Track(row[0], row[1], row[2], row[3], tuple(row[len(HEADER) :])))
    return tracks


def split_file(root: str, split_number: int, subset: str, split: str) -> Path:
    """The metadata file of one split, or an error saying what data.root should hold."""
    relpath = f"data/splits/split-{split_number}/{SUBSET_FILES[subset]}-{split}.tsv"
    return metadata_file("jamendo", root, relpath, HOLDS)


def read_splits(root: str, split_number: int, subset: str) -> dict[str, list[Track]]:
    """split -> its tracks, from the split files of `split_number` and `subset`."""
    vocabulary = subset_tags(subset)
    return {split: read_split_file(split_file(root, split_number, subset, split), vocabulary) for split in SPLITS}


def audio_suffix(root: str, folder: str) -> str:
    """ ".low.mp3" when the audio folder holds the low-quality download's names, else ".mp3"."""
    for name in AUDIO_FOLDERS:
        files = [f for f in listing("jamendo", os.path.join(root, folder, name)) if f.endswith(".mp3")]
        if files:
            return LOW_QUALITY if files[0].endswith(LOW_QUALITY) else ".mp3"
    return ".mp3"


def audio_folder(root: str) -> str:
    """The folder (relative to the root) holding 00..99, or an error naming every place tried."""
    folder = layout_folder("jamendo", root, AUDIO_LAYOUTS, AUDIO_FOLDERS)
    if folder is None:
        tried = ", ".join(os.path.join(root, layout) for layout in AUDIO_LAYOUTS)
        raise FileNotFoundError(
            f"jamendo: none of the audio folders 00..99 is in {tried}; download the audio "
            f"into {os.path.join(root, 'audio')} (see the README) or point data.root at "
            f"the folder holding {HOLDS}"
        )
    return folder


def audio_path(folder: str, path: str, suffix: str) -> str:
    """The audio file of a split file's PATH under the audio `folder`, with the download's `suffix`."""
    return posixpath.join(folder, path[: -len(".mp3")] + suffix)


def report_missing(root: str, splits: dict[str, list[Clip]], streaming: bool) -> None:
    """Log how many tracks of each split have no audio file (a partial download); the streamed
    training split is not checked here."""
    checked = [split for split in SPLITS if not (streaming and split == "train")]
    missing = {split: sum(not os.path.isfile(os.path.join(root, c.path)) for c in splits[split]) for split in checked}
    if any(missing.values()):
        counts = ", ".join(f"{missing[split]} of {len(splits[split])} {split}" for split in checked)
        logger.warning(
            "jamendo: no audio file for %s tracks (a partial download): runs on it are not "
            "comparable with published figures",
            counts,
        )


def report_counts(split_number: int, subset: str, tracks: dict[str, list[Track]]) -> None:
    """Log where the split files hold other track counts than the published ones."""
    published = PUBLISHED_COUNTS.get((split_number, subset))
    counts = tuple(len(tracks[split]) for split in SPLITS)
    if published and counts != published:
        logger.warning(
            "jamendo: the split-%d %s files list %s train / validation / test tracks; the published split has %s",
            split_number,
            subset,
            " / ".join(map(str, counts)),
            " / ".join(map(str, published)),
        )


def multi_label_task(**options) -> bool:
    """MTG-Jamendo is multi-label (tags), whatever its options."""
    return True


def split_detail(subset: str, split_number: int, **options) -> str:
    """What names the split beside its scheme, for published figures (`finetune.published.split_key`)."""
    return f"split{split_number}-{subset}"


def check_split_number(split_number) -> None:
    """Refuse a split number outside 0-4."""
    if isinstance(split_number, bool) or split_number not in SPLIT_NUMBERS:
        raise ValueError(
            f"jamendo: data.split_number={split_number!r} is not valid; choose one of "
            f"{', '.join(map(str, SPLIT_NUMBERS))} (the official splits)"
        )


def build(
    root: str | Path,
    subset: str = "top50tags",
    split_number: int = 0,
    allow_missing: bool = True,
    streaming: bool = False,
    group_by: str = "artist",
) -> DatasetDict:
    """MTG-Jamendo as a DatasetDict (`labels`: indices into `subset_tags(subset)`; `group`: the
    track's ARTIST_ID or ALBUM_ID)."""
    root = dataset_root("jamendo", root)
    check_options(OPTION_CHOICES, subset=subset)
    check_split_number(split_number)
    check_level("jamendo", group_by, ("artist", "album"))
    tracks = read_splits(root, split_number, subset)
    report_counts(split_number, subset, tracks)
    folder = audio_folder(root)
    suffix = audio_suffix(root, folder)
    index = {tag: i for i, tag in enumerate(subset_tags(subset))}
    group = {"artist": lambda t: t.artist, "album": lambda t: t.album, "none": lambda t: ""}[group_by]
    splits = {
        split: [
            Clip(t.id, audio_path(folder, t.path, suffix), tuple(sorted({index[tag] for tag in t.tags})), group(t))
            for t in rows
        ]
        for split, rows in tracks.items()
    }
    report_missing(root, splits, streaming)
    return assemble(
        "jamendo",
        root,
        splits,
        list(index),
        multi_label=multi_label_task(),
        allow_missing=allow_missing,
        streaming=streaming,
    )
