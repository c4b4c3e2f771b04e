"""Metrics against scikit-learn directly and against published MusiCNN predictions on MTAT."""

import numpy as np
import pytest
from sklearn import metrics as skm

from finetune.evaluation import (
    TrackPredictions,
    aggregate_tracks,
    classification_metrics,
    evaluate_windows,
    scalar_metrics,
    tagging_metrics,
    tune_thresholds,
)
from finetune.studies.crossdataset import cross_metrics, resolve


def read_scores(path):
    """MTAT prediction file: `row<TAB>path,score,score,...` -> (paths, (N, 50) scores)."""
    paths, rows = [], []
    for line in path.read_text().splitlines():
        _, rest = line.split("\t", 1)
        name, *values = rest.split(",")
        paths.append(name)
        rows.append([float(v) for v in values])
    return paths, np.asarray(rows)


def test_published_musicnn_mtat_scores(realdata):
    folder = realdata / "mtat" / "musicnn_test_predictions"
    truth_paths, truth = read_scores(folder / "gt.csv")
    est_paths, est = read_scores(folder / "est.csv")
    assert truth_paths == est_paths and truth.shape == (4332, 50)
    result = tagging_metrics(est, truth, [f"tag{i}" for i in range(50)])
    assert result["roc_auc_macro"] == pytest.approx(0.910897708562001, abs=1e-9)
    assert result["pr_auc_macro"] == pytest.approx(0.4509, abs=1e-4)
    assert result["roc_auc_micro"] == pytest.approx(0.9357250743645564, abs=1e-9)


def test_tags_without_positives_are_reported_not_averaged():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 4)) < 0.3).astype(int)
    targets[:, 2] = 0  # no positives in this split
    probs = rng.random((40, 4))
    result = tagging_metrics(probs, targets, ["a", "b", "c", "d"])
    assert result["tags_without_positives"] == ["c"]
    expected = np.mean([skm.roc_auc_score(targets[:, i], probs[:, i]) for i in (0, 1, 3)])
    assert result["roc_auc_macro"] == pytest.approx(expected)
    assert set(result["per_tag"]) == {"a", "b", "d"}


def test_windows_are_averaged_per_track_before_scoring():
    # Track 0 has windows voting class 1 then strongly class 0: the mean decides class 0.
    logits = np.array([[0.0, 1.0], [5.0, 0.0], [0.0, 3.0]])
    track_index = np.array([0, 0, 1])
    labels = np.array([0, 0, 1])
    metrics, probs, track_labels = evaluate_windows(logits, labels, track_index, ["x", "y"], False)
    assert probs.shape == (2, 2) and list(track_labels) == [0, 1]
    assert metrics["accuracy"] == 1.0
    assert metrics["confusion_matrix"] == [[1, 0], [0, 1]]


def test_single_label_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 60)
    logits = rng.normal(size=(60, 5)) + 2 * np.eye(5)[labels] * rng.random((60, 1))
    metrics, _, _ = evaluate_windows(logits, labels, np.arange(60), list("abcde"), False)
    predicted = logits.argmax(1)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert metrics["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert metrics["macro_precision"] == pytest.approx(
        skm.precision_score(labels, predicted, average="macro", zero_division=0)
    )
    assert metrics["macro_recall"] == pytest.approx(skm.recall_score(labels, predicted, average="macro"))
    assert sum(v["support"] for v in metrics["per_class"].values()) == 60


def test_macro_averages_are_over_the_classes_with_tracks_and_name_the_others():
    """A class without test tracks (data.unsplittable=leave_out, a small split) is no zero in the
    macro means: they average the classes with tracks, as scikit-learn does given those labels,
    and metrics.json names the absent class; cross-dataset evaluation means the same."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 80)  # class 4 ("e") has no track
    probs = rng.random((80, 5)) + 1.5 * np.eye(5)[labels] * rng.random((80, 1))
    probs[:3, 4] = 9  # yet the model predicts it for three tracks: errors all the same
    metrics = classification_metrics(probs, labels, list("abcde"))
    predicted, present = probs.argmax(1), [0, 1, 2, 3]
    assert metrics["classes_without_tracks"] == ["e"]
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    for key, score in (
        ("macro_f1", skm.f1_score),
        ("macro_precision", skm.precision_score),
        ("macro_recall", skm.recall_score),
    ):
        expected = score(labels, predicted, labels=present, average="macro", zero_division=0)
        assert metrics[key] == pytest.approx(expected, abs=1e-12), key
    identity = {name: name for name in "abcde"}
    predictions = TrackPredictions([str(i) for i in range(80)], [""] * 80, probs, labels, list("abcde"))
    cross = cross_metrics(predictions, resolve(identity, list("abcde"), list("abcde")), source_multi_label=True)
    assert {k: cross[k] for k in scalar_metrics(metrics)} == scalar_metrics(metrics)


def test_max_aggregation():
    values = np.array([[0.1], [0.9], [0.4]])
    assert aggregate_tracks(values, np.array([3, 3, 7]), "max").ravel().tolist() == [0.9, 0.4]
    with pytest.raises(ValueError, match="mean or max"):
        aggregate_tracks(values, np.array([0, 0, 1]), "median")


def test_tuned_thresholds_on_a_hand_made_example():
    probs = np.array(
        [
            # a: F1 1.0 at 0.8   b: best: all   c: none   d: tie 0.6   e: F1 tie 0.9 / 0.2
            [0.9, 0.7, 0.3, 0.6, 0.9],
            [0.8, 0.6, 0.2, 0.6, 0.8],
            [0.3, 0.4, 0.1, 0.1, 0.7],
            [0.1, 0.2, 0.4, 0.1, 0.2],
        ]
    )
    targets = np.array(
        [
            [1, 0, 0, 1, 1],
            [1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 1, 0, 0, 1],
        ]
    )
    thresholds = tune_thresholds(probs, targets)
    # a: midpoint of 0.8 and 0.3; b: negatives outscore both positives, best F1 predicts all (the
    # lowest score); c: no positives -> fallback 0.5; d: the tied 0.6s go in together (never 0.6
    # itself, which splitting the tie would give); e: F1 2/3 at 0.9 and at 0.2, the higher wins.
    np.testing.assert_allclose(thresholds, [0.55, 0.2, 0.5, 0.35, 0.85])
    assert tune_thresholds(probs, targets, fallback=0.25)[2] == 0.25
    with pytest.raises(ValueError, match="must both be"):
        tune_thresholds(probs, targets[:, :3])


def test_tuned_thresholds_reach_the_best_f1_of_every_tag():
    rng = np.random.default_rng(3)
    targets = (rng.random((80, 6)) < 0.3).astype(int)
    probs = np.clip(0.35 * targets + rng.random((80, 6)) * 0.7, 0, 1).round(2)  # rounding makes ties
    thresholds = tune_thresholds(probs, targets)
    assert ((0 <= thresholds) & (thresholds <= 1)).all()
    for c in range(6):
        best = max(skm.f1_score(targets[:, c], probs[:, c] >= t) for t in np.unique(probs[:, c]))
        assert skm.f1_score(targets[:, c], probs[:, c] >= thresholds[c]) == pytest.approx(best)
