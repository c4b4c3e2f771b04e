"""`data.streaming=true`: the training split streams from the metadata rows without opening its
files; validation and test stay indexed; bad training files are skipped and reported mid-run."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from datasets import Dataset, IterableDataset

from finetune import recipe as recipes
from finetune.cli import main
from finetune.clips import StreamCrops
from finetune.data import load_dataset
from finetune.data.audio import AudioReadError
from finetune.data.common import Clip, assemble
from finetune.data.recipe_data import limit_tracks

OPTIONS = {"synthetic": {}, "mtat": {"tags": 7}}  # the mtat_root fixture has 7 tags


def rows(split):
    target = "labels" if "labels" in split.features else "label"
    return {(r["id"], r["audio"]["path"], tuple(r[target]) if target == "labels" else r[target]) for r in split}


@pytest.mark.parametrize("name", ["synthetic", "mtat"])
def test_streaming_reads_no_training_header_and_indexes_evaluation(name, tmp_path, monkeypatch, request):
    root = request.getfixturevalue(f"{name}_root")
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))  # nothing cached before
    headers = []
    real_info = sf.info
    monkeypatch.setattr(sf, "info", lambda path, *a: headers.append(str(path)) or real_info(path, *a))
    data = load_dataset(name, root, streaming=True, **OPTIONS[name])
    assert isinstance(data["train"], IterableDataset)
    assert isinstance(data["validation"], Dataset) and isinstance(data["test"], Dataset)
    evaluated = {a["path"] for s in ("validation", "test") for a in data[s]["audio"]}
    assert len(headers) == len(evaluated) > 0
    train_paths = {path for _, path, _ in rows(data["train"])}
    assert train_paths and not train_paths & {os.path.abspath(h) for h in headers}


@pytest.mark.parametrize("name", ["synthetic", "mtat"])
def test_streamed_rows_equal_indexed_rows(name, request):
    root = request.getfixturevalue(f"{name}_root")
    streamed = load_dataset(name, root, streaming=True, **OPTIONS[name])
    indexed = load_dataset(name, root, **OPTIONS[name])
    assert streamed["train"].features == indexed["train"].features
    assert rows(streamed["train"]) == rows(indexed["train"])
    for split in ("validation", "test"):
        assert streamed[split]["id"] == indexed[split]["id"]


def test_streamed_paths_must_stay_inside_the_root(tmp_path):
    clips = {"train": [Clip("a", "../outside.wav", 0)], "validation": [], "test": []}
    with pytest.raises(ValueError, match="not inside"):
        assemble("x", str(tmp_path), clips, ["c"], multi_label=False, allow_missing=True, streaming=True)


class StubReader:
    """Reads nothing: fails for `bad` paths, else returns the path's row number as audio."""

    def __init__(self, bad, number):
        self.bad, self.number = bad, number

    def crop(self, path, rng):
        if path in self.bad:
            raise AudioReadError(path, "file not found")
        return np.full(4, self.number[path], dtype=np.float32)


def test_stream_crops_skip_and_count_bad_files_and_keep_labels(synthetic_root, caplog):
    train = load_dataset("synthetic", synthetic_root, streaming=True)["train"]
    table = sorted(rows(train))
    number = {path: i for i, (_, path, _) in enumerate(table)}
    bad = {table[3][1], table[40][1]}
    crops = StreamCrops(train, 5, False, StubReader(bad, number), seed=1)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        items = list(crops)
    assert len(items) == len(table) - 2
    for item in items:  # each label is the label of the file that was read, never a neighbour's
        assert item["labels"] == table[int(item["input_values"][0])][2]
    assert set(crops.skipped) == bad
    assert f"skipped 2 missing or unreadable file(s) of {len(table)}" in caplog.text
    with pytest.raises(RuntimeError, match="no training file could be read"):
        list(StreamCrops(train, 5, False, StubReader(set(number), number)))


def test_streaming_max_tracks_is_a_fixed_seeded_sample(synthetic_root):
    data = load_dataset("synthetic", synthetic_root, streaming=True)
    full = rows(data["train"])
    first = limit_tracks(data, 10, seed=3)
    sample = rows(first["train"])
    assert isinstance(first["train"], IterableDataset) and len(sample) == 10 and sample <= full
    assert rows(first["train"]) == sample  # streamed again: the same rows
    assert rows(limit_tracks(data, 10, seed=3)["train"]) == sample
    assert rows(limit_tracks(data, 10, seed=4)["train"]) != sample
    assert len({label for _, _, label in sample}) > 1  # a random sample, not the first genre
    assert len(first["validation"]) == len(first["test"]) == 10
    assert len(rows(limit_tracks(data, 1000, seed=3)["train"])) == len(full)


@pytest.mark.slow
def test_streaming_run_skips_missing_and_unreadable_training_files(tmp_path, synthetic_root, caplog, capfd):
    root = tmp_path / "synthetic"
    shutil.copytree(synthetic_root, root)
    seed = recipes.load("demo").seed
    sampled = limit_tracks(load_dataset("synthetic", root, seed=seed, streaming=True), 10, seed)
    train = sorted(path for _, path, _ in rows(sampled["train"]))
    os.remove(train[0])
    os.symlink(str(root / "gone.wav"), train[0])  # listed by the loader, missing when read
    with open(train[1], "w") as f:
        f.write("not audio\n" * 100)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        assert (
            main(
                [
                    "--recipe",
                    "demo",
                    "data.streaming=true",
                    "train.max_steps=3",
                    "train.batch_size=4",
                    "train.logging_steps=1",
                    "data.max_tracks=10",
                    f"data.root={root}",
                    f"output_dir={run_dir}",
                    "data.num_workers=0",
                ]
            )
            == 0
        )
    history = json.loads((run_dir / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e][-1] == 3
    logged = caplog.text + capfd.readouterr().err
    assert "skipped 2 missing or unreadable file(s)" in logged
    assert os.path.basename(train[0]) in logged and os.path.basename(train[1]) in logged
