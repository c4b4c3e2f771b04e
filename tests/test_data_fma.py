"""FMA loader: tracks.csv in the real 3-row-header format, subsets, tasks, bad and missing files."""

import logging
import os

import pytest

from data_fixtures import write_audio, write_genres, write_tracks
from finetune.data import fma, load_dataset

GENRES = [
    (12, 0, "Rock"),
    (25, 12, "Punk"),
    (15, 0, "Electronic"),
    (181, 15, "Techno"),
    (21, 0, "Hip-Hop"),
    (38, 0, "Experimental"),
]
# track id: (subset, split, genre_top, genres_all)
TRACKS = {
    2: ("small", "training", "Hip-Hop", "[21]"),
    3: ("small", "validation", "Rock", "[12, 25]"),
    5: ("small", "test", "Electronic", "[15, 181]"),
    10: ("small", "training", "Rock", "[12]"),
    11: ("small", "test", "Rock", "[12]"),  # unreadable file
    98565: ("small", "training", "Rock", "[12]"),  # known bad: no audio in the release
    140: ("medium", "training", "Experimental", "[38]"),
    141: ("medium", "test", "Electronic", "[15]"),
    200: ("large", "training", "", "[12, 25]"),  # no genre_top
    201: ("large", "validation", "Rock", "[12]"),
}


def track_rows(tracks):
    return {
        t: {
            ("set", "subset"): subset,
            ("set", "split"): split,
            ("track", "genre_top"): top,
            ("track", "genres_all"): genres_all,
        }
        for t, (subset, split, top, genres_all) in tracks.items()
    }


@pytest.fixture
def fma_root(tmp_path):
    """Metadata plus fma_small / fma_medium / fma_large audio folders, each with its members."""
    write_tracks(tmp_path / "fma_metadata" / "tracks.csv", track_rows(TRACKS))
    write_genres(tmp_path / "fma_metadata" / "genres.csv", GENRES)
    for rank, subset in enumerate(fma.SUBSETS):
        for track, (member, *_) in TRACKS.items():
            if fma.SUBSETS.index(member) <= rank:
                path = tmp_path / f"fma_{subset}" / f"{track:06d}"[:3] / f"{track:06d}.mp3"
                write_audio(path, seed=track, format="MP3")
        (tmp_path / f"fma_{subset}" / "000" / "000011.mp3").write_bytes(b"ID3" + b"\x00" * 50)
    return tmp_path


def ids_by_split(data):
    return {name: split["id"] for name, split in data.items()}


def test_small_genre_top(fma_root, caplog):
    with caplog.at_level(logging.INFO, logger="finetune.data"):
        data = load_dataset("fma", fma_root)
    assert ids_by_split(data) == {"train": ["000002", "000010"], "validation": ["000003"], "test": ["000005"]}
    assert "098565.mp3 (no audio in the FMA release)" in caplog.text
    assert "1 unreadable files" in caplog.text and "000011.mp3" in caplog.text
    names = data["train"].features["label"].names
    assert names == ["Electronic", "Hip-Hop", "Rock"]
    assert [names[i] for i in data["train"]["label"]] == ["Hip-Hop", "Rock"]
    assert data["test"][0]["audio"]["path"] == str(fma_root / "fma_small" / "000" / "000005.mp3")


def test_medium_contains_small(fma_root):
    data = fma.build(fma_root, subset="medium")
    assert ids_by_split(data) == {
        "train": ["000002", "000010", "000140"],
        "validation": ["000003"],
        "test": ["000005", "000141"],
    }
    assert data["train"].features["label"].names == ["Electronic", "Experimental", "Hip-Hop", "Rock"]
    assert all(a["path"].startswith(str(fma_root / "fma_medium")) for a in data["train"]["audio"])


def test_large_genres_all_is_multi_label_over_titles(fma_root, caplog):
    data = fma.build(fma_root, subset="large", task="genres_all")
    names = data["train"].features["labels"].feature.names
    assert names == ["Electronic", "Experimental", "Hip-Hop", "Punk", "Rock", "Techno"]
    labels = {i: [names[k] for k in tags] for split in data.values() for i, tags in zip(split["id"], split["labels"])}
    assert labels["000200"] == ["Punk", "Rock"] and labels["000005"] == ["Electronic", "Techno"]
    with caplog.at_level(logging.INFO, logger="finetune.data"):
        top = fma.build(fma_root, subset="large")
    assert "000200" not in top["train"]["id"] and "1 tracks without genre_top" in caplog.text


def test_missing_audio_errors_unless_allowed(fma_root):
    os.remove(fma_root / "fma_small" / "000" / "000003.mp3")
    with pytest.raises(FileNotFoundError, match=r"1 of 5 files .* missing .*000003\.mp3"):
        fma.build(fma_root)
    assert len(fma.build(fma_root, allow_missing=True)["validation"]) == 0


def test_bad_options_and_metadata(fma_root):
    with pytest.raises(ValueError, match="'small', 'medium', 'large'"):
        fma.build(fma_root, subset="full")
    with pytest.raises(ValueError, match="'genre_top', 'genres_all'"):
        fma.build(fma_root, task="genres")
    write_tracks(fma_root / "fma_metadata" / "tracks.csv", track_rows({2: ("small", "train", "Rock", "[12]")}))
    with pytest.raises(ValueError, match="set.split='train'"):
        fma.build(fma_root)
    write_tracks(fma_root / "fma_metadata" / "tracks.csv", track_rows({2: ("small", "training", "Rock", "[99]")}))
    with pytest.raises(ValueError, match=r"genre ids \[99\] absent"):
        fma.build(fma_root, task="genres_all")
    (fma_root / "fma_metadata" / "tracks.csv").write_text("track_id,genre\n2,Rock\n")
    with pytest.raises(ValueError, match="is this FMA's tracks.csv"):
        fma.build(fma_root)


def test_real_genres_taxonomy(realdata):
    genres = fma.read_genres(realdata / "fma" / "fma_metadata" / "genres.csv")
    top = sorted(g.title for g in genres.values() if g.parent == 0)
    assert len(genres) == 163 and len(top) == 16
    assert {"Rock", "Hip-Hop", "Electronic", "Old-Time / Historic"} <= set(top)
    assert genres[21].title == "Hip-Hop"


def test_real_track_through_the_loader(realdata, tmp_path):
    """Track 2 of the real release (Hip-Hop, training, small) read from ../shared/realdata."""
    write_tracks(
        tmp_path / "fma_metadata" / "tracks.csv",
        track_rows({2: ("small", "training", "Hip-Hop", "[21]"), 5: ("small", "test", "Hip-Hop", "[21]")}),
    )
    os.symlink(realdata / "fma" / "fma_metadata" / "genres.csv", tmp_path / "fma_metadata" / "genres.csv")
    os.symlink(realdata / "fma" / "fma_small", tmp_path / "fma_small")
    data = fma.build(tmp_path, task="genres_all", allow_missing=True)
    row = data["train"][0]
    assert row["id"] == "000002" and data["train"].features["labels"].feature.names == ["Hip-Hop"]
    assert row["duration"] == pytest.approx(1_321_967 / 44100)
