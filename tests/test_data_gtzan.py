"""GTZAN loader: layouts, the shipped split encoding, missing and corrupt files, random splits."""

import io
import logging
import os
import re

import pytest
import soundfile as sf

from data_fixtures import copy_to, tone
from finetune.data import gtzan, load_dataset

SPLIT_FILES = {"train": "train", "validation": "valid", "test": "test"}


def clip_bytes(fmt: str) -> bytes:
    """A 50 ms clip encoded as `fmt` ("WAV" or "AU")."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.05, 8000), 8000, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def make_gtzan(root, layout="genres_original", ext=".wav", genres=gtzan.GENRES, count=100):
    """`count` clips per genre at `root/layout/<genre>/<genre>.000NN<ext>`."""
    folder = root / layout if layout else root
    copy_to(
        clip_bytes("AU" if ext == ".au" else "WAV"),
        (folder / g / f"{g}.{n:05d}{ext}" for g in genres for n in range(count)),
    )
    return folder


def sizes(dataset):
    return {name: len(split) for name, split in dataset.items()}


def test_shipped_encoding_equals_published_lists(realdata):
    for scheme, suffix in (("fault_filtered", "filtered"), ("stratified", "stratified")):
        ids = gtzan.published_split(scheme)
        for split, prefix in SPLIT_FILES.items():
            lines = (realdata / "gtzan" / "splits" / f"{prefix}_{suffix}.txt").read_text().split()
            assert ids[split] == [line.removesuffix(".wav") for line in lines], (scheme, split)


def test_fault_filtered_drops_and_reports_the_corrupt_file(tmp_path, caplog):
    folder = make_gtzan(tmp_path)
    (folder / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF\x00\x00\x00\x00garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        data = load_dataset("gtzan", tmp_path)
    assert sizes(data) == {"train": 442, "validation": 197, "test": 290}  # 443 - jazz.00054
    assert "jazz.00054.wav" in caplog.text and "1 unreadable" in caplog.text
    train = data["train"]
    names = train.features["label"].names
    assert names == list(gtzan.GENRES)
    assert all(names[label] == i.split("/")[0] for i, label in zip(train["id"], train["label"]))
    assert all(a["path"].startswith(str(folder)) for a in train["audio"])
    assert train[0]["duration"] == pytest.approx(0.05)


@pytest.mark.parametrize("layout, ext", [("genres", ".au"), ("genres_original", ".wav"), ("", ".wav")])
def test_layouts(tmp_path, layout, ext):
    folder = make_gtzan(tmp_path, layout, ext, count=2)
    data = gtzan.build(tmp_path, split_scheme="stratified", allow_missing=True)
    paths = [a["path"] for split in data.values() for a in split["audio"]]
    assert len(set(paths)) == 20 and all(p.startswith(str(folder)) and p.endswith(ext) for p in paths)


def test_missing_files_error_unless_allowed(tmp_path, caplog):
    folder = make_gtzan(tmp_path)
    for name in ("blues/blues.00029", "rock/rock.00099", "pop/pop.00000"):
        (folder / f"{name}.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"3 of 930 files .* missing .*blues\.00029\.wav"):
        gtzan.build(tmp_path)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        data = gtzan.build(tmp_path, allow_missing=True)
    assert sizes(data) == {"train": 441, "validation": 197, "test": 289}
    assert "3 missing files" in caplog.text


def test_no_gtzan_folders_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no genre folders"):
        gtzan.build(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gtzan.build(tmp_path / "nowhere")


def test_unreadable_folders_are_clear_errors(tmp_path, monkeypatch):
    folder = make_gtzan(tmp_path, count=2)
    real_access, real_listdir = os.access, os.listdir
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path) and real_access(path, mode))
    message = f"gtzan: permission denied reading the dataset folder {re.escape(str(tmp_path))}$"
    with pytest.raises(PermissionError, match=message):
        gtzan.build(tmp_path)
    monkeypatch.setattr(os, "access", real_access)
    denied = str(folder / "jazz")

    def listdir(path):  # as if the jazz folder may not be read
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(PermissionError, match=f"gtzan: permission denied reading the folder {re.escape(denied)}$"):
        gtzan.build(tmp_path, split_scheme="random")


def test_random_split_with_custom_genres(tmp_path):
    genres = ["bells", "buzz", "drone"]
    make_gtzan(tmp_path, "genres", ".wav", genres, count=20)
    data = gtzan.build(tmp_path, split_scheme="random", seed=3, genres=genres)
    assert sizes(data) == {"train": 42, "validation": 9, "test": 9}  # 14 / 3 / 3 per genre
    assert data["train"].features["label"].names == genres
    ids = {name: set(split["id"]) for name, split in data.items()}
    assert set.union(*ids.values()) == {f"{g}/{g}.{n:05d}" for g in genres for n in range(20)}
    for split in data.values():
        assert sorted(split["label"]) == sorted(list(range(3)) * (len(split) // 3))
    again = gtzan.build(tmp_path, split_scheme="random", seed=3, genres=genres)
    assert {n: s["id"] for n, s in again.items()} == {n: s["id"] for n, s in data.items()}
    other = gtzan.build(tmp_path, split_scheme="random", seed=4, genres=genres)
    assert set(other["test"]["id"]) != ids["test"]
    with pytest.raises(ValueError, match="split_scheme='random' with custom genres"):
        gtzan.build(tmp_path, genres=genres)


def test_real_gtzan_clips_load_with_their_labels(realdata):
    data = gtzan.build(realdata / "gtzan", split_scheme="stratified", allow_missing=True)
    rows = [row for split in data.values() for row in split]
    names = data["train"].features["label"].names
    assert len(rows) == 40
    numbers = {g: (0, 1, 2, 4) if g == "jazz" else (0, 1, 2, 3) for g in gtzan.GENRES}  # four per genre
    assert sorted(r["id"] for r in rows) == sorted(f"{g}/{g}.{n:05d}" for g in gtzan.GENRES for n in numbers[g])
    for row in rows:
        assert names[row["label"]] == row["id"].split("/")[0]
        assert row["audio"]["path"].endswith(row["id"] + ".wav")
        assert row["duration"] == pytest.approx(30.0, abs=0.7)
