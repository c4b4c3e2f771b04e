"""`data.name=folder`: a user's folder of audio in the audiofolder conventions, through the same
contract as the named datasets, and through the real entry point."""

import json
import logging

import pytest
from datasets import Audio, ClassLabel, IterableDataset

from data_fixtures import write_audio, write_metadata
from finetune import recipe as recipes
from finetune.cli import main
from finetune.data import gtzan, load_dataset
from finetune.data.audio import read_window
from finetune.data.common import stratified_split
from finetune.data.recipe_data import dataset_arguments


def class_folders(root, classes=("rock", "jazz", "10", "2"), count=5, suffix=".wav"):
    """`root/<class>/<class><n><suffix>` for each class."""
    for name in classes:
        for n in range(count):
            write_audio(root / name / f"{name}{n}{suffix}", seed=n)
    return root


def split_ids(dataset):
    return {split: list(rows["id"]) for split, rows in dataset.items()}


def decodes(split):
    return all(len(read_window(audio["path"], 8000)) == 1600 for audio in split["audio"])


def test_class_folders_give_the_contract_and_a_seeded_stratified_split(tmp_path):
    dataset = load_dataset("folder", class_folders(tmp_path / "music"), seed=3)
    assert list(dataset) == ["train", "validation", "test"]
    names = ["2", "10", "jazz", "rock"]  # sorted, numbers numerically
    for rows in dataset.values():
        assert list(rows.features) == ["id", "group", "audio", "label", "duration"]
        assert rows.features["label"] == ClassLabel(names=names)
        assert rows.features["audio"] == Audio(decode=False)
        assert sorted(set(rows["label"])) == [0, 1, 2, 3]  # stratified: every class in every split
        assert rows["duration"] == pytest.approx([0.2] * len(rows))
        assert decodes(rows)
    ids = split_ids(dataset)
    assert [len(i) for i in ids.values()] == [12, 4, 4]
    assert "rock/rock0.wav" in sum(ids.values(), [])  # ids: paths relative to the folder
    row = dataset["train"][0]
    assert names[row["label"]] == row["id"].split("/")[0]
    assert row["audio"]["path"] == str(tmp_path / "music" / row["id"])
    again = load_dataset("folder", tmp_path / "music", seed=3)
    assert split_ids(again) == ids
    assert split_ids(load_dataset("folder", tmp_path / "music", seed=4))["test"] != ids["test"]


def test_the_split_is_gtzans_random_split_with_its_fractions():
    ids = [f"{genre}/{genre}.{n:05d}" for genre in gtzan.GENRES[:3] for n in range(20)]
    by_genre = {i: i.split("/")[0] for i in ids}
    assert stratified_split(by_genre, gtzan.RANDOM_FRACTIONS, 7) == gtzan.random_split(ids, gtzan.GENRES[:3], 7)


def test_split_folders_with_class_folders_and_metadata(tmp_path, caplog):
    class_folders(tmp_path / "train", ("a", "b"), count=6)
    class_folders(tmp_path / "val", ("a", "b"), count=2)  # `val/` is the validation split
    write_audio(tmp_path / "test" / "x.flac")
    write_audio(tmp_path / "test" / "y.flac", seed=1)
    write_metadata(tmp_path / "test" / "metadata.csv", [("x.flac", "a"), ("y.flac", "b")])
    dataset = load_dataset("folder", tmp_path)
    assert [len(rows) for rows in dataset.values()] == [12, 4, 2]
    assert split_ids(dataset)["test"] == ["test/x.flac", "test/y.flac"] and list(dataset["test"]["label"]) == [0, 1]
    assert dataset["validation"]["id"][0] == "val/a/a0.wav"
    (tmp_path / "val").rename(tmp_path / "unused")  # train + test: validation carved from train
    dataset = load_dataset("folder", tmp_path)
    assert [len(rows) for rows in dataset.values()] == [10, 2, 2]
    assert all(i.startswith("train/") for i in dataset["validation"]["id"])
    write_audio(tmp_path / "test" / "z.flac", seed=2)
    write_metadata(tmp_path / "test" / "metadata.csv", [("x.flac", "a"), ("y.flac", "b"), ("z.flac", "polka")])
    with pytest.raises(ValueError, match="polka occur in test but not in train"):
        load_dataset("folder", tmp_path)
    write_metadata(tmp_path / "test" / "metadata.csv", [("x.flac", "a")])
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        load_dataset("folder", tmp_path)
    assert "1 class(es) have no test tracks: b" in caplog.text


def test_root_metadata_with_split_paths_and_tags(tmp_path):
    cells = ["rock;guitar", '["rock", "piano"]', "", "jazz"]  # multi-label; "" = no tag
    rows = []
    for split, count in (("train", 8), ("validation", 4), ("test", 4)):
        for n in range(count):
            write_audio(tmp_path / split / f"{n}.ogg", seed=n)
            rows.append((f"{split}/{n}.ogg", "x", cells[n % 4]))
    write_metadata(tmp_path / "metadata.csv", rows, ("file_name", "other", "tags"))
    dataset = load_dataset("folder", tmp_path, label_column="tags")
    assert dataset["train"].features["labels"].feature.names == ["guitar", "jazz", "piano", "rock"]
    assert list(dataset["train"]["labels"])[:4] == [[0, 3], [2, 3], [], [1]]
    assert dataset["test"]["id"][0] == "test/0.ogg" and decodes(dataset["test"])
    with pytest.raises(
        ValueError,
        match=r"metadata.csv has no column 'label'; its columns: file_name, "
        r"other, tags \(set data.label_column",
    ):
        load_dataset("folder", tmp_path)
    write_metadata(tmp_path / "metadata.csv", rows + [("stray.ogg", "x", "jazz")], ("file_name", "other", "tags"))
    with pytest.raises(ValueError, match=r"inside split folders and outside them \(e.g. stray.ogg\)"):
        load_dataset("folder", tmp_path, label_column="tags")


def test_formats_soundfile_reads_and_ones_it_refuses(tmp_path):
    for n, suffix in enumerate((".wav", ".flac", ".ogg", ".mp3", ".aiff", ".au")):
        for name in ("a", "b"):
            write_audio(tmp_path / name / f"{n}{suffix}", seed=n)
    (tmp_path / "a" / "cover.jpg").write_bytes(b"not audio")  # other files are ignored
    dataset = load_dataset("folder", tmp_path, split_ratios=[0.5, 0.25, 0.25])
    assert sum(len(rows) for rows in dataset.values()) == 12
    for rows in dataset.values():
        assert all(len(read_window(audio["path"], 8000, duration=0.1)) == 800 for audio in rows["audio"])
    (tmp_path / "b" / "song.m4a").write_bytes(b"\0\0\0 ftypM4A ")
    with pytest.raises(
        ValueError,
        match=r"1 file\(s\) in a format soundfile cannot read \(.m4a\), e.g. "
        r"b/song.m4a; convert .* `ffmpeg -i song.m4a song.flac`",
    ):
        load_dataset("folder", tmp_path)


def test_unreadable_files_are_dropped_and_reported_and_training_streams(tmp_path, caplog):
    class_folders(tmp_path, ("a", "b"), count=4)
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF nonsense")
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        dataset = load_dataset("folder", tmp_path)
    assert "dropped 1 unreadable files: a/broken.wav" in caplog.text
    assert "a/broken.wav" not in sum(split_ids(dataset).values(), [])
    streamed = load_dataset("folder", tmp_path, streaming=True)
    assert isinstance(streamed["train"], IterableDataset)
    rows = list(streamed["train"])
    assert {row["id"] for row in rows} - {"a/broken.wav"} == set(dataset["train"]["id"])  # checked when read
    assert rows[0]["duration"] is None and list(streamed["test"]["id"]) == list(dataset["test"]["id"])


def test_a_folder_without_audio_says_what_it_should_hold(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        FileNotFoundError,
        match="no audio under .*: expected one subfolder of audio files per "
        "class, or a metadata.csv with file_name and label columns",
    ):
        load_dataset("folder", tmp_path)


def test_recipe_options_of_folder_and_hub():
    def data(**keys):
        return recipes.from_dict({"data": keys})

    assert dataset_arguments(data(name="folder", root="/m", label_column="genre")) == {
        "root": "/m",
        "label_column": "genre",
        "split_ratios": [0.8, 0.1, 0.1],
        "group_by": "artist",
        "seed": 0,
    }
    assert dataset_arguments(data(name="hub", path="user/set"))["root"] is None
    with pytest.raises(recipes.RecipeError, match="data.path: set it to a Hub dataset id or a local dataset"):
        dataset_arguments(data(name="hub"))
    assert "split_ratios" not in dataset_arguments(data(name="gtzan", root="/g"))  # at its default
    with pytest.raises(
        recipes.RecipeError,
        match=r"data.split_ratios does not apply to dataset 'gtzan' "
        r"\(unset it: data.split_ratios=\[0.8, 0.1, 0.1\]\)",
    ):
        dataset_arguments(data(name="gtzan", root="/g", split_ratios=[0.6, 0.2, 0.2]))
    with pytest.raises(
        recipes.RecipeError,
        match=r"data.split_scheme does not apply to dataset 'folder' \(unset "
        r"it: data.split_scheme=null\); its options: data.label_column",
    ):
        dataset_arguments(data(name="folder", root="/m", split_scheme="random"))


@pytest.mark.slow
def test_the_demo_recipe_trains_on_a_folder(tmp_path):
    root = tmp_path / "music"
    for name in ("rock", "jazz"):
        for n in range(5):
            write_audio(root / name / f"{n}.wav", seconds=1.0, sample_rate=16000, seed=n)
    args = [
        "--recipe",
        "demo",
        "data.name=folder",
        f"data.root={root}",
        "train.max_steps=2",
        "train.batch_size=4",
        "data.num_workers=0",
        f"output_dir={tmp_path / 'run'}",
        "eval.durations=null",
    ]
    assert main(args) == 0  # the demo's own split_scheme (synthetic's) is dropped with its dataset
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test"} and "accuracy" in metrics["test"]
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "on a folder of audio `music`" in card and "generated audio" not in card
