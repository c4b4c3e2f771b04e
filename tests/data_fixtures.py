"""Generated dataset files in the exact real layouts and formats, for the data loader tests."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf


def tone(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Deterministic test signal (T, C): a different sine plus a little noise per channel."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate  # (T,)
    rng = np.random.default_rng(seed)
    columns = [
        0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.01 * rng.standard_normal(len(t)) for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)  # (T, C)


def write_audio(
    path: Path, seconds: float = 0.2, sample_rate: int = 8000, channels: int = 1, seed: int = 0, **options
) -> np.ndarray:
    """Write `tone(...)` to `path` (format from the suffix unless given); return the samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tone(seconds, sample_rate, channels, seed)
    sf.write(path, data, sample_rate, **options)
    return data


def copy_to(template: bytes, paths: Iterable[Path]) -> None:
    """Write the same file bytes at every path (fast way to lay out thousands of clips)."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(template)


def write_annotations(
    path: Path, clip_ids: Sequence[str], mp3_paths: Sequence[str], tag_names: Sequence[str], tags: np.ndarray
) -> None:
    """MTAT annotations_final.csv: tab-separated, every field double-quoted; tags (N, T) 0/1."""
    cells = np.where(tags.astype(bool), '"1"', '"0"')  # (N, T) quoted fields

    def line(fields: Iterable[str]) -> str:
        return "\t".join(fields) + "\n"

    with open(path, "w", encoding="utf-8") as f:
        f.write(line(f'"{name}"' for name in ["clip_id", *tag_names, "mp3_path"]))
        f.writelines(
            line([f'"{clip_id}"', *row, f'"{mp3}"']) for clip_id, mp3, row in zip(clip_ids, mp3_paths, cells.tolist())
        )


# FMA tracks.csv: first header row (column groups), second header row (fields); the third row
# names the index ("track_id").
_FMA_FIELDS = {
    "album": (
        "comments date_created date_released engineer favorites id information listens producer tags title tracks type"
    ),
    "artist": (
        "active_year_begin active_year_end associated_labels bio comments date_created "
        "favorites id latitude location longitude members name related_projects tags "
        "website wikipedia_page"
    ),
    "set": "split subset",
    "track": (
        "bit_rate comments composer date_created date_recorded duration favorites genre_top "
        "genres genres_all information interest language_code license listens lyricist "
        "number publisher tags title"
    ),
}
FMA_COLUMNS = [(group, name) for group, names in _FMA_FIELDS.items() for name in names.split()]


def write_tracks(path: Path, tracks: Mapping[int, Mapping[tuple[str, str], str]]) -> None:
    """FMA tracks.csv with all 52 columns; `tracks` maps track id -> {(group, field): value}.
    Unset fields get filler, including a quoted multi-line artist bio like the real file's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", *(g for g, _ in FMA_COLUMNS)])
        writer.writerow(["", *(n for _, n in FMA_COLUMNS)])
        writer.writerow(["track_id", *([""] * len(FMA_COLUMNS))])
        for track_id, values in tracks.items():
            filler = {("artist", "bio"): '<p>A "band",\nfrom somewhere.</p>\n', ("track", "genres"): "[]"}
            writer.writerow([track_id, *(values.get(c, filler.get(c, "0")) for c in FMA_COLUMNS)])


def write_genres(path: Path, genres: Sequence[tuple[int, int, str]]) -> None:
    """FMA genres.csv from (genre_id, parent, title); top_level is derived from the parents."""
    parents = {g: p for g, p, _ in genres}

    def top(g: int) -> int:
        return g if parents[g] == 0 else top(parents[g])

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        writer.writerows([g, 10, p, title, top(g)] for g, p, title in genres)


def audio_bytes(seed: int = 0, seconds: float = 0.2, sample_rate: int = 8000, format: str = "WAV") -> bytes:
    """The bytes of a `tone` file in `format`, as a dataset's audio column holds them."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, sample_rate, seed=seed), sample_rate, format=format)
    return buffer.getvalue()


def write_parquet_split(path: Path, columns: Mapping[str, list], features) -> None:
    """One Parquet file of `columns` carrying `features` (a `datasets.Features`) in its schema
    metadata, as the Hub's Parquet exports do: an `Audio` column of {bytes, path} structs stays audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(dict(columns)).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    )
    pq.write_table(table, path)


def write_metadata(path: Path, rows: Iterable[Sequence[str]], header: Sequence[str] = ("file_name", "label")) -> None:
    """A `metadata.csv` (audiofolder convention) with `header` and `rows`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
