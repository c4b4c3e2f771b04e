"""Every run, table and summary states its artist leak (issue 28, item 3): how many test (and
validation) tracks share an artist with training, in metrics.json, the console, the report, cv's and
compare --vary's tables and the search's trials."""

import json

import pytest
from datasets import Dataset, DatasetDict

from cli_helpers import run_main
from data_fixtures import write_audio
from finetune.leakage import leak_cell, leakage, leakage_text
from test_search import trials_of


def split(ids, groups):
    return Dataset.from_dict({"id": ids, "group": groups})


def test_leakage_counts_the_tracks_and_artists_on_both_sides():
    data = DatasetDict(
        train=split(["1", "2", "3"], ["a", "a", "b"]),
        validation=split(["4", "5"], ["b", "e"]),
        test=split(["6", "7", "8", "9"], ["a", "a", "c", "9"]),
    )
    found = leakage(data, "artist")
    assert found == {
        "group_by": "artist",
        "groups_known": True,
        "test_tracks": 4,
        "test_tracks_sharing": 2,
        "groups_shared": 1,
        "validation_tracks": 2,
        "validation_tracks_sharing": 1,
    }
    assert leakage_text(found) == (
        "artists: 2 of 4 test tracks share an artist with training (1 artists on both "
        "sides): figures are inflated by the artist effect"
    )
    assert leak_cell(found) == "2/4" and leak_cell(found, "validation") == "1/2" and leak_cell(None) == "-"


def test_a_split_whose_tracks_are_their_own_groups_says_artists_are_unknown():
    data = DatasetDict(train=split(["1", "2"], ["1", "2"]), test=split(["3"], ["3"]))
    found = leakage(data, "artist")
    assert not found["groups_known"] and leak_cell(found) == "?"
    assert leakage_text(found).startswith("artists: unknown for these tracks")
    assert leakage_text(leakage(DatasetDict(train=split(["1"], ["x"]), test=split(["2"], ["y"])), "album")) == (
        "albums: none of the 1 test tracks shares an album with training (album-disjoint split)"
    )


@pytest.fixture(scope="module")
def artist_folders(tmp_path_factory):
    """3 genres x 3 artists (sub-folders) x 2 tracks."""
    root = tmp_path_factory.mktemp("artists")
    for genre in ("a", "b", "c"):
        for artist in range(3):
            for n in range(2):
                write_audio(
                    root / genre / f"{genre}-artist{artist}" / f"{n}.wav",
                    seconds=1.0,
                    sample_rate=16000,
                    seed=artist * 10 + n,
                )
    return root


TINY = ["train.max_steps=2", "train.batch_size=4", "data.num_workers=0", "eval.durations=null", "data.clip_seconds=0.5"]


@pytest.mark.slow
def test_compare_vary_and_cv_tables_state_the_leak_of_every_value(artist_folders, tmp_path):
    out = tmp_path / "vary"
    code, printed, _ = run_main(
        [
            "compare",
            "--recipe",
            "demo",
            "--vary",
            "train.lr=1e-3,2e-3",
            "--folds",
            "3",
            "--out",
            str(out),
            "data.name=folder",
            f"data.root={artist_folders}",
            *TINY,
        ]
    )
    assert code == 0
    vary_md = (out / "vary.md").read_text()
    assert "test tracks sharing an artist" in vary_md and vary_md.count("| 0/18 |") == 2  # every track, no artist
    for value in json.loads((out / "vary.json").read_text())["values"]:
        assert value["artist_leakage"]["test_tracks_sharing"] == 0 and value["artist_leakage"]["groups_known"]
        summary_md = (out / value["folder"] / "summary.md").read_text()
        assert (
            "artists: none of the 18 test tracks shares an artist with training (artist-disjoint split)" in summary_md
        )
        run = out / value["runs"][0]["run"]
        assert json.loads((run / "metrics.json").read_text())["test"]["artist_leakage"]["test_tracks"] == 6
        assert "shares an artist with training" in (run / "report.md").read_text()
        assert "- artists: none of the 6 test tracks shares an artist" in (run / "model" / "README.md").read_text()


@pytest.mark.slow
def test_a_run_prints_its_leak_and_the_search_lists_each_trials(artist_folders, tmp_path):
    run_dir = tmp_path / "run"
    code, printed, _ = run_main(
        [
            "--recipe",
            "demo",
            "data.name=folder",
            f"data.root={artist_folders}",
            f"output_dir={run_dir}",
            "data.group_by=none",
            *TINY,
        ]
    )
    assert code == 0
    assert "artists: unknown for these tracks (each its own group)" in printed  # group_by=none: not checked
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.001, high: 0.01, log: true}\n")
    out = tmp_path / "search"
    code, _, _ = run_main(
        [
            "search",
            "--recipe",
            "demo",
            "--space",
            str(space),
            "--out",
            str(out),
            "--trials",
            "2",
            "data.name=folder",
            f"data.root={artist_folders}",
            *TINY,
        ]
    )
    assert code == 0
    rows = trials_of(out)
    for row in rows:
        leak = json.loads((out / row["run"] / "metrics.json").read_text())["test"]["artist_leakage"]
        assert row["validation tracks sharing an artist"] == f"0/{leak['validation_tracks']}"
    assert "validation tracks sharing an artist" in (out / "trials.md").read_text()
