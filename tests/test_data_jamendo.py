"""MTG-Jamendo loader on the real split-0 files (../shared/realdata/jamendo, cut to 200 tracks a
split) with generated audio at the real paths: tag vocabularies, both audio layouts, a partial
download, a damaged file, artist-disjoint splits, published counts, and recipes run end to end."""

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backbone_fixtures import tiny_backbones  # noqa: F401  fixture
from cli_helpers import run_main
from data_fixtures import copy_to, write_audio
from finetune import published, recipe as recipes
from finetune.data import jamendo, load_dataset
from finetune.pack import pack

SUBSETS = ("top50tags", "genre", "instrument", "moodtheme")
# the published moodtheme.txt tags that the split files do not use (the repository's moodtheme_split.txt)
DISCARDED_MOODS = {"mood/theme---ambiental", "mood/theme---horror", "mood/theme---mellow"}
FULL_METADATA = os.environ.get("FINETUNE_JAMENDO_METADATA")  # a clone of MTG/mtg-jamendo-dataset


@pytest.fixture(scope="module")
def real_splits(realdata) -> Path:
    return realdata / "jamendo" / "splits" / "split-0"


def real_rows(path: Path) -> list[list[str]]:
    """The rows of a real split file, header left out."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


@pytest.fixture(scope="module")
def mp3(tmp_path_factory) -> bytes:
    """One short generated MP3 whose bytes every generated track reuses."""
    path = tmp_path_factory.mktemp("mp3") / "tone.mp3"
    write_audio(path, seconds=3.0, sample_rate=16000, format="MP3")
    return path.read_bytes()


def jamendo_root(
    root: Path,
    real_splits: Path,
    mp3: bytes,
    subset: str = "top50tags",
    rows: slice = slice(None),
    folder: str = "audio",
    suffix: str = ".mp3",
) -> Path:
    """A download laid out as the real one: the real split files of `subset` (the `rows` of their
    tracks, byte for byte) under data/splits/split-0, and an MP3 at every path they name under
    `folder`, named with `suffix`."""
    target = root / "data" / "splits" / "split-0"
    target.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        name = f"{jamendo.SUBSET_FILES[subset]}-{split}.tsv"
        lines = (real_splits / name).read_bytes().splitlines(keepends=True)
        (target / name).write_bytes(b"".join(lines[:1] + lines[1:][rows]))
        copy_to(mp3, [root / folder / (row[3][: -len(".mp3")] + suffix) for row in real_rows(target / name)])
    return root


def test_tag_vocabularies_are_the_published_lists(real_splits, realdata):
    assert jamendo.subset_tags("top50tags") == (realdata / "jamendo" / "tags_top50.txt").read_text().split()
    moods = (realdata / "jamendo" / "tags_moodtheme.txt").read_text().split()
    assert jamendo.subset_tags("moodtheme") == [tag for tag in moods if tag not in DISCARDED_MOODS]
    assert len(jamendo.subset_tags("genre")) == 87 and len(jamendo.subset_tags("instrument")) == 40
    assert jamendo.subset_tags("all") == sorted(
        jamendo.subset_tags("genre") + jamendo.subset_tags("instrument") + jamendo.subset_tags("moodtheme")
    )
    for subset in SUBSETS:
        vocabulary = jamendo.subset_tags(subset)
        assert vocabulary == sorted(vocabulary)
        used = {
            tag
            for split in ("train", "validation", "test")
            for row in real_rows(real_splits / f"autotagging_{subset}-{split}.tsv")
            for tag in row[5:]
        }
        assert used <= set(vocabulary), used - set(vocabulary)


@pytest.mark.parametrize("subset", SUBSETS)
def test_each_subset_loads_the_real_split_files(subset, real_splits, mp3, tmp_path):
    root = jamendo_root(tmp_path, real_splits, mp3, subset)
    data = load_dataset("jamendo", root, subset=subset)
    vocabulary = jamendo.subset_tags(subset)
    for split, rows in data.items():
        expected = real_rows(root / "data" / "splits" / "split-0" / f"autotagging_{subset}-{split}.tsv")
        assert len(rows) == len(expected) == 200, "the loader keeps every row of the cut files"
        assert rows.features["labels"].feature.names == vocabulary
        assert rows["id"] == [row[0] for row in expected] and rows["group"] == [row[1] for row in expected]
        tags = [sorted(vocabulary[i] for i in labels) for labels in rows["labels"]]
        assert tags == [sorted(row[5:]) for row in expected]
        assert [os.path.relpath(a["path"], root) for a in rows["audio"]] == [f"audio/{row[3]}" for row in expected]
    artists = {split: set(rows["group"]) for split, rows in data.items()}
    assert not (
        artists["train"] & artists["validation"]
        or artists["train"] & artists["test"]
        or artists["validation"] & artists["test"]
    )


def test_albums_are_the_groups_on_request(real_splits, mp3, tmp_path):
    root = jamendo_root(tmp_path, real_splits, mp3, rows=slice(5))
    data = load_dataset("jamendo", root, group_by="album")
    albums = [row[2] for row in real_rows(root / "data/splits/split-0/autotagging_top50tags-test.tsv")]
    assert data["test"]["group"] == albums


@pytest.mark.parametrize("subset", SUBSETS)
def test_no_artist_crosses_the_published_splits(subset, real_splits):
    artists = {
        split: {row[1] for row in real_rows(real_splits / f"autotagging_{subset}-{split}.tsv")}
        for split in ("train", "validation", "test")
    }
    assert all(len(names) > 10 for names in artists.values())
    assert not (
        artists["train"] & artists["validation"]
        or artists["train"] & artists["test"]
        or artists["validation"] & artists["test"]
    )


@pytest.mark.parametrize(
    "folder, suffix", [("audio", ".mp3"), ("audio-low", ".low.mp3"), ("", ".low.mp3"), ("", ".mp3")]
)
def test_both_published_audio_layouts(folder, suffix, real_splits, mp3, tmp_path):
    """`NN/<id>.mp3` (full quality) or `NN/<id>.low.mp3` (the low-quality download), in audio/,
    audio-low/ or data.root itself."""
    root = jamendo_root(tmp_path, real_splits, mp3, rows=slice(3), folder=folder, suffix=suffix)
    data = load_dataset("jamendo", root)
    paths = [os.path.relpath(a["path"], root) for a in data["train"]["audio"]]
    rows = real_rows(root / "data/splits/split-0/autotagging_top50tags-train.tsv")
    assert paths == [os.path.join(folder, row[3][: -len(".mp3")] + suffix) for row in rows]
    assert [len(split) for split in data.values()] == [3, 3, 3]


def test_a_partial_download_loads_what_is_there_and_is_not_comparable(real_splits, mp3, tmp_path, caplog):
    root = jamendo_root(tmp_path, real_splits, mp3, rows=slice(6))
    for split, gone in (("train", 2), ("test", 1)):
        for row in real_rows(root / f"data/splits/split-0/autotagging_top50tags-{split}.tsv")[:gone]:
            (root / "audio" / row[3]).unlink()
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        data = load_dataset("jamendo", root)
    assert [len(split) for split in data.values()] == [4, 6, 5]
    assert (
        "jamendo: no audio file for 2 of 6 train, 0 of 6 validation, 1 of 6 test tracks (a partial download)"
        in caplog.text
    )
    assert "the published split has 32136 / 10888 / 11356" in caplog.text
    recipe = recipes.load("mert_jamendo", [f"data.root={root}"])
    assert published.split_key(recipe) == "jamendo/official/split0-top50tags"
    assert (
        published.partial_test_split(recipe, {"num_tracks": len(data["test"])})
        == "tested on 5 tracks; the published test split has 11356"
    )
    assert published.partial_test_split(recipe, {"num_tracks": 11356}) == ""
    with pytest.raises(FileNotFoundError, match=r"3 of 18 files named by the split are missing"):
        load_dataset("jamendo", root, allow_missing=False)


def test_a_damaged_file_is_reported_and_skipped(real_splits, mp3, tmp_path, caplog):
    root = jamendo_root(tmp_path, real_splits, mp3, rows=slice(4))
    damaged = real_rows(root / "data/splits/split-0/autotagging_top50tags-validation.tsv")[1]
    (root / "audio" / damaged[3]).write_text("<html>not found</html>")
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        data = load_dataset("jamendo", root)
    assert damaged[0] not in data["validation"]["id"] and len(data["validation"]) == 3
    assert "dropped 1 unreadable files" in caplog.text and damaged[3] in caplog.text


def test_wrong_files_and_settings_are_clear_errors(real_splits, mp3, tmp_path):
    with pytest.raises(FileNotFoundError, match="data/splits/split-0/autotagging_top50tags-train.tsv not found"):
        load_dataset("jamendo", tmp_path)
    root = jamendo_root(tmp_path, real_splits, mp3, rows=slice(2))
    with pytest.raises(FileNotFoundError, match="data/splits/split-3/autotagging_top50tags-train.tsv not found"):
        load_dataset("jamendo", root, split_number=3)
    with pytest.raises(ValueError, match=r"data.split_number=5 is not valid; choose one of 0, 1, 2, 3, 4"):
        load_dataset("jamendo", root, split_number=5)
    with pytest.raises(ValueError, match="'top50tags', 'genre', 'instrument', 'moodtheme', 'all'"):
        load_dataset("jamendo", root, subset="mood")
    genre = root / "data/splits/split-0/autotagging_top50tags-test.tsv"
    genre.write_bytes((real_splits / "autotagging_genre-test.tsv").read_bytes())
    with pytest.raises(
        ValueError,
        match=r"top50tags-test.tsv, line \d+: tag 'genre---\w+' is not one of this "
        r"subset's 50 tags; is the file of another subset\?",
    ):
        load_dataset("jamendo", root)
    (root / "audio").rename(root / "elsewhere")
    genre.write_bytes((real_splits / "autotagging_top50tags-test.tsv").read_bytes())
    with pytest.raises(FileNotFoundError, match="none of the audio folders 00..99 is in"):
        load_dataset("jamendo", root)


@pytest.mark.skipif(
    not FULL_METADATA,
    reason="the full MTG-Jamendo split files are not here (only the 200-track "
    "cuts in ../shared/realdata/jamendo): set FINETUNE_JAMENDO_METADATA to a clone of "
    "MTG/mtg-jamendo-dataset to check the published counts",
)
@pytest.mark.parametrize("split_number", jamendo.SPLIT_NUMBERS)
def test_the_full_split_files_hold_the_published_counts_and_keep_artists_apart(split_number):
    for subset in [subset for number, subset in jamendo.PUBLISHED_COUNTS if number == split_number]:
        tracks = jamendo.read_splits(FULL_METADATA, split_number, subset)
        assert (
            tuple(len(tracks[split]) for split in ("train", "validation", "test"))
            == jamendo.PUBLISHED_COUNTS[(split_number, subset)]
        )
        artists = {split: {t.artist for t in rows} for split, rows in tracks.items()}
        assert not (
            artists["train"] & artists["validation"]
            or artists["train"] & artists["test"]
            or artists["validation"] & artists["test"]
        )


@pytest.mark.slow
def test_the_scratch_recipe_trains_evaluates_and_exports_end_to_end(real_splits, mp3, tmp_path):
    spread = slice(None, None, 25)  # 8 tracks a split, of several artists and tags (the first 8 share both)
    root = jamendo_root(tmp_path / "jamendo", real_splits, mp3, rows=spread)
    run_dir = tmp_path / "run"
    code, _, log = run_main(
        [
            "--recipe",
            "musicnn_jamendo",
            f"data.root={root}",
            "train.max_steps=2",
            "train.batch_size=4",
            "data.num_workers=0",
            "data.crops_per_track=1",
            f"output_dir={run_dir}",
        ]
    )
    assert code == 0, log[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["roc_auc_macro"] <= 1.0 and metrics["test"]["num_tracks"] == 8
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert list(config["id2label"].values()) == jamendo.subset_tags("top50tags")
    report = (run_dir / "report.md").read_text()
    assert "tested on 8 tracks; the published test split has 11356" in (run_dir / "model" / "README.md").read_text()
    assert "VGG-ish" not in report, "no published figure on top-50 is set beside a partial run"
    assert "artists: none of the 8 test tracks shares an artist with training" in report
    exported = tmp_path / "export"
    assert run_main(["export", str(run_dir), "--to", str(exported)])[0] == 0
    assert (exported / "model.safetensors").is_file() and "MTG-Jamendo" in (exported / "README.md").read_text()
    packed = tmp_path / "packed"
    recipe = recipes.load("musicnn_jamendo", [f"data.root={root}"])
    pack(recipe, str(packed), shard_mb=1)
    assert "split `jamendo/official/split0-top50tags`" in (packed / "README.md").read_text()
    loaded, original = (
        load_dataset("hub", None, path=str(packed), label_column="labels"),
        load_dataset("jamendo", root, subset="top50tags"),
    )
    for split in ("train", "test"):  # each track's artist, kept
        assert sorted(loaded[split]["group"]) == sorted(original[split]["group"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mert_jamendo", "mert_jamendo_probe"])
def test_the_mert_recipes_train_and_evaluate_on_a_tiny_mert(name, tiny_backbones, real_splits, mp3, tmp_path):
    """LoRA and the per-layer probe through the recipes as written, on a tiny random MERT in MERT's format."""
    root = jamendo_root(tmp_path / "jamendo", real_splits, mp3, subset="instrument", rows=slice(None, None, 25))
    run_dir = tmp_path / "run"
    code, _, log = run_main(
        [
            "--recipe",
            name,
            f"data.root={root}",
            "data.subset=instrument",
            f"backbone.path={tiny_backbones['mert']}",
            "train.max_steps=2",
            "train.batch_size=4",
            "data.num_workers=0",
            "data.crops_per_track=1",
            "eval.max_seconds=2",
            f"output_dir={run_dir}",
        ]
    )
    assert code == 0, log[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["roc_auc_macro"] <= 1.0 and 0.0 <= metrics["test"]["pr_auc_macro"] <= 1.0
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert list(config["id2label"].values()) == jamendo.subset_tags("instrument")
    assert "tested on 8 tracks; the published test split has 5115" in (run_dir / "report.md").read_text()


def test_the_jamendo_recipes_are_listed_and_resolve(tmp_path):
    listed = subprocess.run(
        [sys.executable, "-m", "finetune", "recipes"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("mert_jamendo", "mert_jamendo_probe", "musicnn_jamendo"):
        assert re.search(rf"^{name}\s", listed, re.MULTILINE), listed
        recipe = recipes.load(name, [f"data.root={tmp_path}"])
        assert (recipe.data.name, recipe.data.subset, recipe.data.split_number) == ("jamendo", "top50tags", 0)
    with pytest.raises(recipes.RecipeError, match="data.split_number: 7 is out of range; it must be at least 0"):
        recipes.load("musicnn_jamendo", ["data.split_number=7"])
