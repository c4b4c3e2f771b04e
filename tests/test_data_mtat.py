"""MTAT loader: top-N tags, standard and Pons splits, bad files, and the published Won et al. lists."""

import ast
import csv
import json
import logging
import os
import re

import numpy as np
import pytest

from data_fixtures import write_annotations, write_audio
from finetune.data import load_dataset, mtat

SPLITS_DIR = ("mtat", "splits")


def read_real_splits(realdata):
    """Published facts: clip ids and paths in annotation order, valid/test top-50 ground truth,
    per-split tag counts, the tag list, and the Won et al. valid/test lists."""
    folder = realdata.joinpath(*SPLITS_DIR)
    index = [line.split("\t") for line in (folder / "index_MAGNA.tsv").read_text().splitlines()]
    labels = ast.literal_eval((folder / "output_labels_mtt.txt").read_text().split("=", 1)[1].strip())
    truth = {}
    for name in ("val_gt_mtt.tsv", "test_gt_mtt.tsv"):
        for line in (folder / name).read_text().splitlines():
            clip_id, vector = line.split("\t")
            truth[clip_id] = np.array(json.loads(vector), dtype=bool)  # (50,)
    with open(folder / "stats.csv", newline="") as f:
        train_counts = {row[""]: int(row["train"]) for row in csv.DictReader(f)}
    train_rows = [int(x) for x in (folder / "train.txt").read_text().split()]
    won = {split: set(np.load(folder / f"{split}.npy").tolist()) for split in ("valid", "test")}
    return index, labels, truth, train_counts, train_rows, won


def real_tag_matrix(index, labels, truth, train_counts, train_rows, rng):
    """(N, 50) tags: the real valid/test vectors; train rows get each tag exactly its published
    train count, every listed train row at least one tag; other rows none."""
    tags = np.zeros((len(index), len(labels)), dtype=bool)
    for row, (clip_id, _) in enumerate(index):
        if clip_id in truth:
            tags[row] = truth[clip_id]
    train_rows = np.array(train_rows)
    slots = np.repeat(np.arange(len(labels)), [train_counts[t] for t in labels])
    rng.shuffle(slots)
    tags[train_rows, slots[: len(train_rows)]] = True  # one tag per listed train row
    for j, tag in enumerate(labels):
        free = train_rows[~tags[train_rows, j]]
        extra = train_counts[tag] - tags[train_rows, j].sum()
        tags[rng.choice(free, extra, replace=False), j] = True
    return tags


@pytest.fixture(scope="module")
def real_mtat(realdata, tmp_path_factory):
    """All 25,863 real clip ids and paths in an annotations_final.csv of the real format whose 50
    standard tags reproduce the published valid/test ground truth and tag counts, plus 138 rarer
    filler tags (the real annotations are not available here). Every mp3 is a link to the real
    MTAT clip; the three known-empty ones are empty."""
    index, labels, truth, train_counts, train_rows, won = read_real_splits(realdata)
    rng = np.random.default_rng(0)
    top = real_tag_matrix(index, labels, truth, train_counts, train_rows, rng)
    filler = np.zeros((len(index), 138), dtype=bool)  # (N, 138), each rarer than the 50th tag
    for j, count in enumerate([489, 489, *rng.integers(1, 489, 136)]):
        filler[rng.choice(len(index), count, replace=False), j] = True
    order = rng.permutation(188)
    names = np.array(labels + [f"filler tag {j}" for j in range(138)])[order].tolist()
    root = tmp_path_factory.mktemp("mtat")
    write_annotations(
        root / mtat.ANNOTATIONS,
        [c for c, _ in index],
        [p for _, p in index],
        names,
        np.concatenate([top, filler], axis=1)[:, order],
    )
    clip = realdata / "mtat" / "audio" / "joram-moments_of_clarity-08-solipsism-59-88.mp3"
    for folder in "0123456789abcdef":
        (root / folder).mkdir()
    for clip_id, path in index:
        if clip_id in mtat.KNOWN_BAD:
            (root / path).write_bytes(b"")
        else:
            os.symlink(clip, root / path)
    return root, index, labels, won, train_rows


@pytest.mark.slow
def test_standard_top50_reproduces_won_et_al(real_mtat, realdata):
    root, index, labels, won, train_rows = real_mtat
    data = mtat.build(root)
    names = data["train"].features["labels"].feature.names
    assert set(names) == set(labels)
    assert set(names) == set(np.load(realdata.joinpath(*SPLITS_DIR, "tags.npy")).tolist())
    row_of = {clip_id: row for row, (clip_id, _) in enumerate(index)}
    for split, published in (("validation", won["valid"]), ("test", won["test"])):
        ours = {
            f"{row_of[i]}\t{os.path.relpath(a['path'], root)}" for i, a in zip(data[split]["id"], data[split]["audio"])
        }
        assert ours == published and len(ours) == {"validation": 1529, "test": 4332}[split]
    assert len(data["train"]) == 15_247
    # train.txt (rows of annotations_final.csv) is the train list of the same standard split
    assert sorted(row_of[i] for i in data["train"]["id"]) == sorted(train_rows)
    assert all(data["test"]["labels"]) and all(data["validation"]["labels"])  # >= 1 tag each
    table = mtat.read_annotations(root / mtat.ANNOTATIONS)
    counts = table.tags.sum(axis=0)[[table.tag_names.index(n) for n in names]]
    assert all(np.diff(counts) <= 0)  # most frequent first


@pytest.mark.slow
def test_pons_keeps_zero_tag_clips_and_drops_the_empty_mp3s(real_mtat, caplog):
    root, *_ = real_mtat
    with caplog.at_level(logging.INFO, logger="finetune.data"):
        data = load_dataset("mtat", root, split_scheme="pons")
    assert {n: len(s) for n, s in data.items()} == {"train": 18_706, "validation": 1_825, "test": 5_329}
    assert "dropped 3 known-bad files" in caplog.text
    assert not {"35644", "55753", "57881"} & set(data["train"]["id"])


@pytest.mark.slow
def test_all_188_tags_in_frequency_order(real_mtat):
    root, *_ = real_mtat
    table = mtat.read_annotations(root / mtat.ANNOTATIONS)
    data = mtat.build(root, tags=188)
    names = data["train"].features["labels"].feature.names
    counts = table.tags.sum(axis=0)[[table.tag_names.index(n) for n in names]]
    assert sorted(names) == sorted(table.tag_names) and all(np.diff(counts) <= 0)


def test_top_tags_breaks_ties_by_column_order():
    tags = np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=bool)  # counts 1, 2, 2, 3, 2
    assert mtat.top_tags(tags, 5) == [3, 1, 2, 4, 0]
    assert mtat.top_tags(tags, 2) == [3, 1]


def small_mtat(root, paths, tag_rows):
    """annotations_final.csv over tags a..d for `paths`; clip ids are 1, 2, ..."""
    write_annotations(
        root / mtat.ANNOTATIONS,
        [str(i + 1) for i in range(len(paths))],
        paths,
        ["a", "b", "c", "d"],
        np.array(tag_rows),
    )


def test_small_dataset_labels_splits_and_bad_files(tmp_path, caplog):
    paths = ["0/x-0-29.mp3", "b/y-0-29.mp3", "c/z-0-29.mp3", "c/zero-0-29.mp3", "d/w-0-29.mp3", "f/broken-0-29.mp3"]
    small_mtat(tmp_path, paths, [[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]])
    for i, path in enumerate(paths[:-1]):
        write_audio(tmp_path / path, seed=i, format="MP3")
    (tmp_path / "f").mkdir()
    (tmp_path / paths[-1]).write_text("<html>not found</html>")
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        data = mtat.build(tmp_path, tags=2)
    assert data["train"].features["labels"].feature.names == ["a", "b"]
    assert dict(zip(data["train"]["id"], data["train"]["labels"])) == {"1": [0], "2": [0, 1]}
    assert data["validation"]["id"] == ["3"] and data["test"]["id"] == ["5"]
    assert "1 unreadable files" in caplog.text and "broken-0-29.mp3" in caplog.text
    assert mtat.build(tmp_path, tags=2, split_scheme="pons")["validation"]["id"] == ["3", "4"]


def test_missing_mp3s_error_unless_allowed(tmp_path):
    small_mtat(tmp_path, ["0/a.mp3", "c/b.mp3", "d/c.mp3"], [[1, 0, 0, 0]] * 3)
    write_audio(tmp_path / "0" / "a.mp3", format="MP3")
    with pytest.raises(FileNotFoundError, match=r"2 of 3 files .* missing .*c/b\.mp3"):
        mtat.build(tmp_path, tags=1)
    data = mtat.build(tmp_path, tags=1, allow_missing=True)
    assert [len(s) for s in data.values()] == [1, 0, 0]


def test_bad_options_and_metadata_are_clear_errors(tmp_path):
    small_mtat(tmp_path, ["c/a.mp3"], [[1, 0, 0, 0]])
    for tags in (0, 5, True, "50"):
        with pytest.raises(ValueError, match="choose an integer from 1 to 4"):
            mtat.build(tmp_path, tags=tags)
    with pytest.raises(ValueError, match="'standard', 'pons'"):
        mtat.build(tmp_path, tags=1, split_scheme="lee")
    small_mtat(tmp_path, ["g/a.mp3"], [[1, 0, 0, 0]])
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="outside the folders 0..f"):
        mtat.build(tmp_path, tags=1)
    (tmp_path / mtat.ANNOTATIONS).write_text("id,tags\n1,a\n")
    with pytest.raises(ValueError, match="annotations_final.csv: expected a tab-separated header"):
        mtat.build(tmp_path)


@pytest.mark.parametrize("folder", ["", "audio"])
def test_flat_and_original_layouts_load_the_same(folder, tmp_path):
    """The mp3 folders 0..f beside the csv, or in audio/ beside it (the original layout)."""
    paths = ["0/x-0-29.mp3", "c/y-0-29.mp3", "f/z-0-29.mp3"]
    small_mtat(tmp_path, paths, [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    audio = tmp_path / folder
    for i, path in enumerate(paths):
        write_audio(audio / path, seed=i, format="MP3")
    data = mtat.build(tmp_path, tags=2)
    assert {
        split: [
            (i, labels, os.path.relpath(a["path"], audio)) for i, labels, a in zip(s["id"], s["labels"], s["audio"])
        ]
        for split, s in data.items()
    } == {"train": [("1", [0], paths[0])], "validation": [("2", [1], paths[1])], "test": [("3", [0, 1], paths[2])]}


def test_csv_without_mp3_folders_is_one_error_naming_both_layouts(tmp_path):
    small_mtat(tmp_path, ["0/a.mp3", "c/b.mp3"], [[1, 0, 0, 0]] * 2)
    (tmp_path / "audio").mkdir()
    message = (
        f"mtat: none of the mp3 folders 0..f is in {tmp_path} or {tmp_path / 'audio'}; data.root "
        f"should be the folder holding annotations_final.csv beside the mp3 folders 0..f or "
        f"beside an audio/ folder holding them"
    )
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}$"):
        mtat.build(tmp_path, tags=1)
