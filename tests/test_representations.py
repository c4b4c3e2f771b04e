"""Comparing runs that differ in one setting: each run's representation and saliency of the same test
clips (two 2-step demo runs), and the test tracks on which their predictions disagree (numpy)."""

import matplotlib.image
import numpy as np
import pytest

from backbone_fixtures import one_torch_thread  # noqa: F401  fixture: toy models run fastest on one thread
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.representations import (
    CELL_INCHES,
    FIGURE_NAME,
    LABEL_INCHES,
    clip_tracks,
    disagreement_section,
    representation_section,
)

CLASSES = 3
DPI = 110  # finetune.report.save_figure's default


@pytest.fixture(scope="module")
def two_runs(synthetic_root, tmp_path_factory, one_torch_thread) -> dict:
    """Front end -> run folder: the demo recipe for 2 steps with mel and stft, 6 tracks per split."""
    root = tmp_path_factory.mktemp("vary")
    runs = {frontend: root / frontend for frontend in ("mel", "stft")}
    for frontend, run_dir in runs.items():
        assert (
            main(
                [
                    "--recipe",
                    "demo",
                    "train.max_steps=2",
                    "train.batch_size=4",
                    "data.num_workers=0",
                    "data.max_tracks=6",
                    "eval.durations=null",
                    f"model.args.frontend={frontend}",
                    f"data.root={synthetic_root}",
                    f"output_dir={run_dir}",
                ]
            )
            == 0
        )
    return runs


@pytest.mark.slow
def test_the_figure_shows_one_clip_of_each_common_class_under_each_run(two_runs, tmp_path):
    section = representation_section(two_runs, tmp_path, classes=CLASSES)
    assert section.images == [FIGURE_NAME] and section.title == "How each front end sees the music"
    height, width = matplotlib.image.imread(tmp_path / FIGURE_NAME).shape[:2]
    columns, rows = len(two_runs), CLASSES  # the figure's size is its grid's
    assert width == round((CELL_INCHES[0] * columns + LABEL_INCHES) * DPI)
    assert height == round(CELL_INCHES[1] * rows * DPI)
    assert [p.name for p in tmp_path.iterdir()] == [FIGURE_NAME]  # it writes nothing else

    first = TrackPredictions.load(two_runs["mel"] / "predictions" / "test.npz")
    clips = clip_tracks(first, CLASSES)
    counts = np.bincount(first.labels, minlength=len(first.label_names))
    assert [label for _, label in clips] == list(np.argsort(-counts, kind="stable")[:CLASSES])
    for track, label in clips:
        assert first.labels[track] == label
        assert first.probs[track, label] == first.probs[first.labels == label, label].max()
        assert f"{first.ids[track]} ({first.label_names[label]})" in " ".join(section.text)


def test_a_tagging_clip_is_the_likeliest_track_not_yet_shown():
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]])  # tags a: 3, b: 3, c: 1 tracks
    probs = np.array([[0.9, 0.9, 0.1], [0.5, 0.1, 0.1], [0.1, 0.8, 0.7], [0.2, 0.3, 0.1]])
    predictions = TrackPredictions(["t0", "t1", "t2", "t3"], [""] * 4, probs, labels, ["a", "b", "c"])
    assert clip_tracks(predictions, 2) == [(0, 0), (2, 1)]  # t0 is a's; b's best is then t2


def genres(ids: list[str], predicted: list[int], confidence: list[float], labels: list[int]) -> TrackPredictions:
    """Three-class predictions giving class `predicted[i]` probability `confidence[i]`."""
    probs = np.full((len(ids), 3), 0.0)
    for row, (cls, p) in enumerate(zip(predicted, confidence)):
        probs[row] = (1 - p) / 2
        probs[row, cls] = p
    return TrackPredictions(ids, [f"{i}.wav" for i in ids], probs, np.array(labels), ["blues", "jazz", "rock"])


def test_tracks_with_different_predictions_rank_above_those_all_agree_on():
    mel = genres(["t0", "t1", "t2", "t3"], [0, 1, 2, 0], [0.9, 0.6, 0.5, 0.8], [0, 1, 2, 0])
    stft = genres(["t3", "t2", "t1", "t0"], [2, 2, 0, 0], [0.9, 0.9, 0.7, 0.8], [0, 2, 1, 0])  # shuffled order
    section = disagreement_section({"mel": mel, "stft": stft}, top=3)
    header, *rows = section.tables[0]
    assert header == ["track", "true", "mel", "stft"]
    # t3 (true-class spread 0.75) and t1 (0.45) differ; of the agreeing t2 (0.4) and t0 (0.1), t2 is next
    assert [row[0] for row in rows] == ["t3", "t1", "t2"]
    assert rows[0] == ["t3", "blues", "blues (0.80)", "rock (0.90)"]
    assert "agree on 2 of 4 test tracks" in section.text[0]


def test_tagging_runs_rank_by_the_difference_of_their_tag_probabilities():
    labels = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])
    a = TrackPredictions(
        ["t0", "t1"], ["", ""], np.array([[0.9, 0.1, 0.2, 0.8], [0.1, 0.9, 0.8, 0.3]]), labels, ["w", "x", "y", "z"]
    )
    b = TrackPredictions(
        ["t0", "t1"], ["", ""], np.array([[0.9, 0.2, 0.2, 0.7], [0.9, 0.1, 0.2, 0.8]]), labels, ["w", "x", "y", "z"]
    )
    header, *rows = disagreement_section({"a": a, "b": b}).tables[0]
    assert [row[0] for row in rows] == ["t1", "t0"]
    assert rows[0][1:] == ["x, y", "x 0.90, y 0.80, z 0.30", "w 0.90, z 0.80, y 0.20"]


def test_runs_on_different_tracks_are_refused_by_name():
    mel = genres(["t0", "t1"], [0, 1], [0.9, 0.9], [0, 1])
    pcen = genres(["t0", "t2"], [0, 1], [0.9, 0.9], [0, 1])
    with pytest.raises(ValueError, match="mel and pcen"):
        disagreement_section({"mel": mel, "pcen": pcen})
