"""`data.name=hub`: any `datasets` dataset, built locally and loaded offline (Parquet with audio
bytes as the Hub exports it, `save_to_disk` with paths, tags, streaming), through the same contract
as the named datasets and through the real entry point. Nothing reaches the Hub."""

import json
import pickle

import datasets
import pytest
import soundfile as sf
from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, IterableDataset, List, Value

from data_fixtures import audio_bytes, tone, write_parquet_split
from finetune.cli import main
from finetune.data import load_dataset
from finetune.data.audio import read_window
from finetune.data.hub import audio_cache

GENRES = ["rock", "jazz", "blues"]  # a ClassLabel's order, kept
GENRE_LABEL = ClassLabel(names=GENRES)


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Per-test caches: `datasets` prepares local files into one (never the user's), and extracted
    audio goes to another, so that each test sees only its own files."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "finetune-cache"))


def parquet_dataset(root, splits=(("train", 12), ("test", 3)), label=GENRE_LABEL, seconds=0.2):
    """`root/data/<split>-00000-of-00001.parquet`: an Audio column of {bytes, path} and a label column."""
    features = Features({"audio": Audio(), "genre": label})
    for index, (split, count) in enumerate(splits):
        seeds = [100 * index + n for n in range(count)]  # distinct files (the cache is content-addressed)
        labels = [n % 3 if isinstance(label, ClassLabel) else GENRES[n % 3] for n in range(count)]
        write_parquet_split(
            root / "data" / f"{split}-00000-of-00001.parquet",
            {
                "audio": [
                    {"bytes": audio_bytes(seed, seconds, format="FLAC"), "path": f"{split}-{n}.flac"}
                    for n, seed in enumerate(seeds)
                ],
                "genre": labels,
            },
            features,
        )
    return root


def decodes(split, seconds=0.2):
    return all(len(read_window(audio["path"], 8000)) == round(seconds * 8000) for audio in split["audio"])


def cache_files():
    return {path: path.stat().st_mtime_ns for path in audio_cache().rglob("*") if path.is_file()}


def test_parquet_with_audio_bytes_extracts_each_file_once(tmp_path):
    root = parquet_dataset(tmp_path / "set")
    dataset = load_dataset("hub", None, path=str(root), label_column="genre", seed=1)
    assert [len(rows) for rows in dataset.values()] == [9, 3, 3]  # validation carved from train
    for rows in dataset.values():
        assert list(rows.features) == ["id", "group", "audio", "label", "duration"]
        assert rows.features["label"] == ClassLabel(names=GENRES) and rows.features["audio"] == Audio(decode=False)
        assert sorted(set(rows["label"])) == [0, 1, 2]
        assert decodes(rows) and rows["duration"] == pytest.approx([0.2] * len(rows))
        assert all(audio["path"].startswith(str(audio_cache())) for audio in rows["audio"])
    assert list(dataset["test"]["id"]) == ["test/0", "test/1", "test/2"]
    assert list(dataset["test"]["label"]) == [0, 1, 2]
    assert all(i.startswith("train/") for i in dataset["validation"]["id"])
    extracted = cache_files()
    assert len(extracted) == 15
    again = load_dataset("hub", str(root), label_column="genre", seed=1)  # data.root names a local one too
    assert cache_files() == extracted  # reused, not written again
    assert list(again["validation"]["id"]) == list(dataset["validation"]["id"])


def test_string_labels_and_a_missing_column_name_the_columns(tmp_path):
    root = parquet_dataset(tmp_path / "set", (("train", 9), ("validation", 3), ("test", 3)), label=Value("string"))
    dataset = load_dataset("hub", None, path=str(root), label_column="genre")
    assert dataset["train"].features["label"].names == sorted(GENRES)
    assert [len(rows) for rows in dataset.values()] == [9, 3, 3]
    with pytest.raises(ValueError, match=r"has no column 'label' \(data.label_column\); its columns: audio, genre"):
        load_dataset("hub", None, path=str(root))
    with pytest.raises(
        ValueError,
        match=r"has no column 'sound' \(data.audio_column\) or 'label' "
        r"\(data.label_column\); its columns: audio, genre",
    ):
        load_dataset("hub", None, path=str(root), audio_column="sound")


def saved_dataset(tmp_path, labels, splits=("train",)):
    """A `save_to_disk` DatasetDict holding paths (a string column) to WAV files."""
    data = {}
    for split in splits:
        paths = []
        for n in range(len(labels)):
            path = tmp_path / "wavs" / f"{split}{n}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, tone(0.2, 8000, seed=n), 8000)
            paths.append(str(path))
        data[split] = Dataset.from_dict({"file": paths, "tags": labels})
    DatasetDict(data).save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


def test_saved_dataset_with_paths_and_tags(tmp_path):
    tags = [["rock", "guitar"], ["guitar"], ["piano"], [], ["rock"]] * 2
    saved = saved_dataset(tmp_path, tags)
    dataset = load_dataset("hub", None, path=str(saved), audio_column="file", label_column="tags")
    assert dataset["train"].features["labels"] == List(ClassLabel(names=["guitar", "piano", "rock"]))
    rows = {row["id"]: row for split in dataset.values() for row in split}
    assert sorted(rows) == sorted(f"train/{n}" for n in range(10))  # carved from the only split
    assert rows["train/0"]["labels"] == [0, 2] and rows["train/0"]["audio"]["path"] == str(tmp_path / "wavs/train0.wav")
    assert all(decodes(split) for split in dataset.values())
    assert not audio_cache().exists()  # paths are used as they are, nothing extracted
    (tmp_path / "wavs" / "train3.wav").unlink()
    with pytest.raises(FileNotFoundError, match="1 of .* files named by the split are missing"):
        load_dataset("hub", None, path=str(saved), audio_column="file", label_column="tags")
    dataset = load_dataset("hub", None, path=str(saved), audio_column="file", label_column="tags", allow_missing=True)
    assert sum(len(split) for split in dataset.values()) == 9


def test_split_names_and_hidden_test_labels(tmp_path):
    saved = saved_dataset(tmp_path, [0, 1, 0, 1, 0, 1], splits=("train", "dev", "test"))
    dataset = load_dataset("hub", None, path=str(saved), audio_column="file", label_column="tags")
    assert list(dataset["validation"]["id"]) == [f"dev/{n}" for n in range(6)]  # dev is the validation split
    assert dataset["train"].features["label"].names == ["0", "1"]
    hidden = Dataset.from_dict(
        {"file": [str(tmp_path / "wavs/test0.wav")] * 2, "tags": [-1, -1]},
        features=Features({"file": Value("string"), "tags": ClassLabel(names=["a", "b"])}),
    )
    labelled = Dataset.from_dict(
        {"file": [str(tmp_path / f"wavs/train{n}.wav") for n in range(6)], "tags": [0, 1] * 3}, features=hidden.features
    )
    DatasetDict(train=labelled, test=hidden).save_to_disk(tmp_path / "hidden")
    dataset = load_dataset("hub", None, path=str(tmp_path / "hidden"), audio_column="file", label_column="tags")
    assert [len(rows) for rows in dataset.values()] == [2, 2, 2]  # test's labels hidden: carved from train
    assert all(i.startswith("train/") for split in dataset.values() for i in split["id"])


def test_streaming_extracts_training_audio_as_it_is_read(tmp_path):
    root = parquet_dataset(tmp_path / "set", (("train", 6), ("validation", 3), ("test", 3)))
    dataset = load_dataset("hub", None, path=str(root), label_column="genre", streaming=True)
    assert isinstance(dataset["train"], IterableDataset) and len(cache_files()) == 6  # evaluation audio only
    assert dataset["train"].features["label"] == ClassLabel(names=GENRES)
    rows = list(pickle.loads(pickle.dumps(dataset["train"])))  # DataLoader workers get a copy
    assert [row["id"] for row in rows] == [f"train/train-{n}.flac" for n in range(6)]  # the audio's name in the dataset
    assert [row["label"] for row in rows] == [0, 1, 2, 0, 1, 2] and rows[0]["duration"] is None
    assert all(len(read_window(row["audio"]["path"], 8000)) == 1600 for row in rows)
    assert len(cache_files()) == 12
    with pytest.raises(
        ValueError,
        match="data.streaming=true streams the train split of a dataset with its own "
        "labelled validation and test splits",
    ):
        load_dataset("hub", None, path=str(parquet_dataset(tmp_path / "two")), label_column="genre", streaming=True)


def test_formats_soundfile_cannot_read_are_refused(tmp_path):
    features = Features({"audio": Audio(), "label": Value("string")})
    write_parquet_split(
        tmp_path / "set" / "train.parquet",
        {
            "audio": [{"bytes": audio_bytes(n), "path": f"{n}.wav"} for n in range(5)]
            + [{"bytes": b"\0\0\0 ftypM4A ", "path": "song.m4a"}],
            "label": ["a", "b"] * 3,
        },
        features,
    )
    with pytest.raises(
        ValueError,
        match=r"hub: split train: 1 file\(s\) in a format soundfile cannot read "
        r"\(.m4a\), e.g. song.m4a; .*`ffmpeg -i song.m4a song.flac`",
    ):
        load_dataset("hub", None, path=str(tmp_path / "set"))


@pytest.mark.slow
def test_the_demo_recipe_trains_on_a_local_parquet_dataset(tmp_path):
    root = parquet_dataset(tmp_path / "set", (("train", 9), ("validation", 3), ("test", 3)), seconds=1.0)
    assert (
        main(
            [
                "--recipe",
                "demo",
                "data.name=hub",
                f"data.path={root}",
                "data.label_column=genre",
                "data.split_scheme=null",
                "train.max_steps=2",
                "train.batch_size=4",
                "data.num_workers=0",
                f"output_dir={tmp_path / 'run'}",
                "eval.durations=null",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test"} and "accuracy" in metrics["test"]
