"""Paired test: it finds a real difference, not a null one, for genres and tags; tracks by id."""

import numpy as np
import pytest

from finetune.evaluation import TrackPredictions
from finetune.stats.paired import paired_test

TRACKS, CLASSES, TAGS = 200, 5, 6


def genre_predictions(labels: np.ndarray, right: np.ndarray, ids: list[str]) -> TrackPredictions:
    """Probabilities (N, C) that pick the true label where `right` (N,) and the next class elsewhere."""
    predicted = np.where(right, labels, (labels + 1) % CLASSES)
    probs = np.full((len(labels), CLASSES), 0.1 / (CLASSES - 1))
    probs[np.arange(len(labels)), predicted] = 0.9
    return TrackPredictions(ids, [f"{t}.wav" for t in ids], probs, labels, [f"c{i}" for i in range(CLASSES)])


def tag_predictions(targets: np.ndarray, signal: float, rng, ids: list[str]) -> TrackPredictions:
    """Sigmoid scores (N, T): `signal` times the targets plus independent noise."""
    probs = 1 / (1 + np.exp(-(signal * targets + rng.standard_normal(targets.shape))))
    return TrackPredictions(ids, [f"{t}.mp3" for t in ids], probs, targets, [f"t{i}" for i in range(TAGS)])


@pytest.fixture
def genres():
    rng = np.random.default_rng(0)
    ids = [f"track{i:03d}" for i in range(TRACKS)]
    return rng, ids, rng.integers(0, CLASSES, TRACKS)


def test_genres_real_difference(genres):
    rng, ids, labels = genres
    a = genre_predictions(labels, rng.random(TRACKS) < 0.9, ids)
    b = genre_predictions(labels, rng.random(TRACKS) < 0.5, ids)
    result = paired_test(a, b)
    right_a, right_b = a.probs.argmax(1) == labels, b.probs.argmax(1) == labels
    assert result["metric"] == "accuracy" and result["resamples"] == 1000 and result["tracks"] == TRACKS
    assert result["difference"] == pytest.approx(right_a.mean() - right_b.mean())
    assert result["interval"][0] > 0 and result["bootstrap_p"] < 0.01
    assert (result["b"], result["c"]) == ((right_a & ~right_b).sum(), (~right_a & right_b).sum())
    assert result["mcnemar_p"] < 0.01
    assert paired_test(a, b) == result, "seeded"


def test_genres_null_difference(genres):
    rng, ids, labels = genres
    right_a = rng.permutation(TRACKS) < 140  # both right on exactly 70 %, independently
    right_b = rng.permutation(TRACKS) < 140
    result = paired_test(genre_predictions(labels, right_a, ids), genre_predictions(labels, right_b, ids))
    assert result["difference"] == 0
    low, high = result["interval"]
    assert low < 0 < high and result["bootstrap_p"] > 0.05 and result["mcnemar_p"] > 0.05
    assert result["b"] == result["c"] > 0


def test_matches_tracks_by_id_not_order(genres):
    rng, ids, labels = genres
    a = genre_predictions(labels, rng.random(TRACKS) < 0.9, ids)
    b = genre_predictions(labels, rng.random(TRACKS) < 0.5, ids)
    order = rng.permutation(TRACKS)
    shuffled = TrackPredictions(
        [ids[i] for i in order], [b.paths[i] for i in order], b.probs[order], b.labels[order], b.label_names
    )
    assert paired_test(a, shuffled) == paired_test(a, b)


def test_refuses_different_tracks(genres):
    rng, ids, labels = genres
    a = genre_predictions(labels, rng.random(TRACKS) < 0.9, ids)
    other = genre_predictions(labels[:150], rng.random(150) < 0.9, ids[:149] + ["elsewhere"])
    with pytest.raises(ValueError, match="same tracks: A has 200, B has 150, 149 of them in both"):
        paired_test(a, other)
    relabelled = genre_predictions((labels + 1) % CLASSES, np.ones(TRACKS, bool), ids)
    with pytest.raises(ValueError, match="same labels"):
        paired_test(a, relabelled)


def test_tags_real_and_null_difference():
    rng = np.random.default_rng(1)
    ids = [f"clip{i}" for i in range(TRACKS)]
    targets = (rng.random((TRACKS, TAGS)) < 0.3).astype(np.int64)  # (N, T)
    strong, weak = tag_predictions(targets, 2.0, rng, ids), tag_predictions(targets, 0.0, rng, ids)
    result = paired_test(strong, weak)
    assert result["metric"] == "roc_auc_macro" and result["resamples"] == 200
    assert result["difference"] > 0.2 and result["interval"][0] > 0
    assert result["bootstrap_p"] == pytest.approx(2 / 201), "no draw at or below 0: the smallest p of 200 resamples"
    assert "mcnemar_p" not in result
    null = paired_test(tag_predictions(targets, 1.0, rng, ids), tag_predictions(targets, 1.0, rng, ids))
    low, high = null["interval"]
    assert low < 0 < high and null["bootstrap_p"] > 0.05
