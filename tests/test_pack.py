"""`python -m finetune pack`: a recipe's dataset as Parquet shards (FLAC at the model's rate) in a
folder, at an fsspec URL or in a Hub dataset repo, that `data.name=hub` trains from, streamed by
two processes each reading its own shards."""

import json
import os
import subprocess
from collections import Counter

import pytest

from finetune import recipe as recipes
from finetune.cli import main
from finetune.data import load_dataset
from finetune.data.audio import read_window
from finetune.data.recipe_data import recipe_dataset
from finetune.export import HubError
from finetune.pack import pack
from test_distributed import free_port, launcher
from test_predict_export import FolderApi

TRACKS = 12  # per split, in the runs trained from the shards
DEMO = ["data.num_workers=0", f"data.max_tracks={TRACKS}"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, synthetic_root):
    """The demo's data packed into a folder, in shards of about 1 MB."""
    folder = tmp_path_factory.mktemp("packed") / "demo"
    recipe = recipes.load("demo", [f"data.root={synthetic_root}"])
    assert pack(recipe, str(folder), shard_mb=1) == str(folder)
    return folder, recipe


@pytest.mark.slow
def test_shards_hold_every_track_at_the_models_rate_with_a_card(packed):
    folder, recipe = packed
    shards = sorted(p.name for p in (folder / "data").iterdir())
    assert len([s for s in shards if s.startswith("train-")]) > 1, "several shards: each process can read its own"
    assert all(s.endswith(f"-of-{sum(t.startswith(s.split('-')[0]) for t in shards):05d}.parquet") for s in shards)
    card = (folder / "README.md").read_text()
    assert "audio-classification" in card and "16000 Hz" in card and "data.name=hub" in card
    original = recipe_dataset(recipe)
    loaded = load_dataset("hub", None, path=str(folder))
    assert loaded["train"].features["label"].names == original["train"].features["label"].names
    for split in ("train", "validation", "test"):
        assert Counter(loaded[split]["label"]) == Counter(original[split]["label"])
        assert sorted(loaded[split]["duration"]) == pytest.approx(sorted(original[split]["duration"]), abs=1e-3)
    row = loaded["test"][0]
    assert len(read_window(row["audio"]["path"], 16000)) == round(row["duration"] * 16000)


@pytest.mark.slow
def test_a_file_url_destination_trains_like_a_folder(packed, tmp_path):
    _, recipe = packed
    url = f"file://{tmp_path / 'remote'}"
    assert pack(recipe, url, shard_mb=1) == url
    assert sorted(p.name for p in (tmp_path / "remote" / "data").iterdir()) == sorted(
        p.name for p in (packed[0] / "data").iterdir()
    )
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "data.name=hub",
                f"data.path={url}",
                "train.max_steps=2",
                "train.batch_size=4",
                *DEMO,
                "eval.durations=null",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["num_tracks"] == TRACKS


@pytest.mark.slow
def test_a_hub_destination_uploads_the_folder_and_a_failure_keeps_it(packed, tmp_path, capsys):
    _, recipe = packed
    api = FolderApi(tmp_path / "hub")
    assert pack(recipe, "hf://datasets/user/demo-packed", shard_mb=1, api=api) == "hf://datasets/user/demo-packed"
    assert api.created == [("user/demo-packed", False)]
    assert (tmp_path / "hub" / "user" / "demo-packed" / "README.md").is_file()
    with pytest.raises(HubError, match="The local folder .* is intact"):
        pack(recipe, "hf://datasets/user/other", shard_mb=1, api=FolderApi(tmp_path / "hub", fail=True))


@pytest.mark.slow
def test_the_command_refuses_a_folder_that_is_not_empty(packed, capsys):
    assert main(["pack", "--recipe", "demo", "--to", str(packed[0])]) == 2
    assert capsys.readouterr().err.strip() == f"error: pack: {packed[0]} is not empty; choose a new folder"


@pytest.mark.slow
def test_two_processes_train_streamed_from_the_shards(packed, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            *launcher("torchrun", free_port()),
            "-m",
            "finetune",
            "--recipe",
            "demo",
            "data.name=hub",
            f"data.path={packed[0]}",
            "data.streaming=true",
            "train.max_steps=3",
            "train.batch_size=4",
            *DEMO,
            "eval.durations=null",
            f"output_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert max(entry.get("step", 0) for entry in history) == 3


def test_a_packed_dataset_keeps_its_artist_groups(tmp_path):
    from finetune.data import planted

    root = planted.generate(tmp_path / "planted")
    recipe = recipes.load("demo", ["data.name=folder", f"data.root={root}"])
    folder = tmp_path / "packed"
    pack(recipe, str(folder), shard_mb=1)
    assert "`artist`: each track's artist group" in (folder / "README.md").read_text()
    original, loaded = recipe_dataset(recipe), load_dataset("hub", None, path=str(folder))
    for split in ("train", "validation", "test"):  # the hub loader names rows <split>/<row>: the groups, kept
        assert sorted(loaded[split]["group"]) == sorted(original[split]["group"])
    assert len(set(loaded["train"]["group"])) < len(loaded["train"])  # artists, not one group a track
    assert not set(loaded["train"]["group"]) & set(loaded["test"]["group"])


@pytest.mark.slow
def test_a_packed_dataset_of_unknown_artists_stays_unknown(packed):
    """The demo's tracks name no artist: its packed column is blank, so the reloaded groups are unknown."""
    from finetune.leakage import leakage

    loaded = load_dataset("hub", None, path=str(packed[0]))
    assert not leakage(loaded, "artist")["groups_known"]
