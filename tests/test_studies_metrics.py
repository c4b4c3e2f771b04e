"""Study arithmetic on known numbers: bootstrap scores and intervals, precision@k, rare classes,
confident mistakes, genre mappings, published results. No model runs here."""

import csv

import numpy as np
import pytest
from sklearn import metrics as skm

from finetune import published, recipe as recipes
from finetune.data import gtzan
from finetune.evaluation import TrackPredictions, classification_metrics, tagging_metrics
from finetune.metrics import MULTI_LABEL, average_precision_columns, metrics_for, roc_auc_columns
from finetune.stats import bootstrap
from finetune.studies import genre_maps
from finetune.studies.crossdataset import cross_metrics, resolve
from finetune.studies.mistakes import confident_mistakes
from finetune.studies.rare import rare_class_study


def test_column_roc_auc_and_ap_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((300, 7)), 1)  # many ties
    targets = (rng.random((300, 7)) < 0.3).astype(int)
    targets[:, 3] = 0
    roc, ap = roc_auc_columns(scores, targets), average_precision_columns(scores, targets)
    for c in range(7):
        if c == 3:
            assert np.isnan(roc[c]) and np.isnan(ap[c])
            continue
        assert roc[c] == pytest.approx(skm.roc_auc_score(targets[:, c], scores[:, c]), abs=1e-12)
        assert ap[c] == pytest.approx(skm.average_precision_score(targets[:, c], scores[:, c]), abs=1e-12)


def test_fast_genre_scores_equal_classification_metrics():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 120)
    probs = rng.random((120, 6)) + 1.5 * np.eye(6)[labels] * rng.random((120, 1))
    probs[:, 5] = 0  # a class never predicted: precision 0 by convention
    full = classification_metrics(probs, labels, list("abcdef"))
    fast = bootstrap.genre_scores(labels, probs.argmax(1), 6)
    for key, value in fast.items():
        assert value == pytest.approx(full[key], abs=1e-12), key
    assert full["top5_accuracy"] >= full["top3_accuracy"] >= full["accuracy"]


def test_confusion_matrix_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 200)
    predicted = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
    metrics = {"confusion_matrix": skm.confusion_matrix(labels, predicted).tolist()}
    intervals = bootstrap.split_intervals(metrics, None)
    estimate = bootstrap.genre_scores(labels, predicted, 4)
    for key, (low, high) in intervals.items():
        assert low <= estimate[key] <= high and high - low > 0.02, key
    assert intervals == bootstrap.split_intervals(metrics, None), "seeded: the same intervals twice"


def test_tag_intervals_from_predictions_contain_the_estimate():
    rng = np.random.default_rng(3)
    targets = (rng.random((150, 8)) < 0.25).astype(int)
    probs = np.clip(0.4 * targets + rng.random((150, 8)) * 0.8, 0, 1)
    predictions = TrackPredictions([str(i) for i in range(150)], [""] * 150, probs, targets, list("abcdefgh"))
    estimate = tagging_metrics(probs, targets, predictions.label_names)
    intervals = bootstrap.split_intervals({"per_tag": {}}, predictions)
    assert set(intervals) == {m.name for m in metrics_for(MULTI_LABEL, 8) if m.score}, "every scored tag metric"
    for key, (low, high) in intervals.items():
        assert low <= estimate[key] <= high, key
    assert bootstrap.split_intervals({"per_tag": {}}, None) == {}


def test_precision_and_recall_at_k():
    probs = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.9], [0.5, 0.4, 0.3, 0.2]])
    targets = np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    result = tagging_metrics(probs, targets, list("abcd"))
    # top 3: track 0 (a b d) hits a, 1 of its 2; track 1 hits d, its only one; track 2 has none
    assert result["precision_at_3"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert result["recall_at_3"] == pytest.approx((1 / 2 + 1) / 2)
    assert "precision_at_5" not in result, "k must be below the tag count"
    assert result["tags_without_positives"] == ["b"]


def test_rare_class_rank_correlation_and_ranking():
    counts = np.array([500, 50, 5, 200, 1])
    labels = np.repeat(np.arange(4), 10)  # class e has no test track
    probs = np.full((40, 5), 0.1)
    right = np.array([10, 6, 2, 8])  # tracks of each class predicted right, the rest predicted e
    for c in range(4):
        rows = np.flatnonzero(labels == c)
        probs[rows[: right[c]], c] = 0.9
        probs[rows[right[c] :], 4] = 0.9
    predictions = TrackPredictions([str(i) for i in range(40)], [""] * 40, probs, labels, list("abcde"))
    result = rare_class_study(predictions, counts)
    assert result["spearman"] == pytest.approx(1.0)
    assert [(c["name"], c["train"], c["test"]) for c in result["classes"]] == [
        ("a", 500, 10),
        ("b", 50, 10),
        ("c", 5, 10),
        ("d", 200, 10),
    ]
    assert result["not_scored"] == ["e"], "no test track: reported, not ranked last with F1 0"
    assert rare_class_study(predictions, np.full(5, 7))["spearman"] is None, "equal counts: undefined"


def test_confident_mistakes_rank_errors_by_confidence():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.95, 0.05], [0.45, 0.55]])
    labels = np.array([1, 1, 1, 0])
    predictions = TrackPredictions(["a", "b", "c", "d"], ["pa", "pb", "pc", "pd"], probs, labels, ["x", "y"])
    mistakes = confident_mistakes(predictions)
    assert [m["id"] for m in mistakes] == ["c", "a", "d"]
    assert mistakes[0]["predicted"] == "x" and mistakes[0]["p_true"] == pytest.approx(0.05)
    tags = TrackPredictions(
        ["a", "b"], ["", ""], np.array([[0.9, 0.2], [0.4, 0.1]]), np.array([[0, 1], [1, 0]]), ["x", "y"]
    )
    worst = confident_mistakes(tags)
    assert [(m["id"], m["tag"], m["truth"]) for m in worst] == [("a", "x", "absent"), ("b", "x", "present")]


def test_mapping_reports_classes_without_counterpart():
    source = ["blues", "disco", "metal", "rock"]
    target = ["Blues", "Rock", "Electronic"]
    resolved = resolve(genre_maps.packaged_mapping("gtzan", "fma"), source, target)
    assert resolved.covered == ["Blues", "Rock"]
    assert resolved.unmapped_source == ["disco"] and resolved.uncovered_target == ["Electronic"]
    probs = np.array(
        [
            [0.1, 0.1, 0.5, 0.3],  # metal + rock -> Rock 0.8: right
            [0.2, 0.7, 0.05, 0.05],  # mass on disco, no counterpart: wrong
            [0.6, 0.2, 0.1, 0.1],  # Blues: right
            [0.9, 0.0, 0.0, 0.1],
        ]
    )  # an Electronic track: left out
    predictions = TrackPredictions(list("abcd"), [""] * 4, probs, np.array([1, 1, 0, 2]), target)
    metrics = cross_metrics(predictions, resolved, source_multi_label=False)
    assert metrics["num_tracks"] == 3 and metrics["left_out_tracks"] == {"Electronic": 1}
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 1]]  # last column: no counterpart


def test_packaged_maps_name_real_labels(realdata):
    with open(realdata / "fma" / "fma_metadata" / "genres.csv", newline="") as f:
        fma_top = {row["title"] for row in csv.DictReader(f) if row["parent"] == "0"}
    labels = {"gtzan": set(gtzan.GENRES), "fma": fma_top}
    for (source, target), mapping in genre_maps.GENRE_MAPS.items():
        for side, names in ((source, mapping), (target, [t for t in mapping.values() if t])):
            if side in labels:
                assert set(names) <= labels[side], (source, target, set(names) - labels[side])
    assert set(genre_maps.GTZAN_FMA) == set(gtzan.GENRES), "every GTZAN genre decided, None included"


def test_published_rows_follow_dataset_and_split():
    def key(*overrides):
        return published.split_key(recipes.from_dict(recipes.apply_overrides({}, list(overrides))))

    assert key("data.name=mtat") == "mtat/standard/top50"
    assert key("data.name=mtat", "data.tags=188") == "mtat/standard/top188"
    assert key("data.name=gtzan") == "gtzan/fault_filtered"
    assert key("data.name=fma") == "fma/official/small-genre_top"
    gtzan_rows = published.published_for(recipes.from_dict({"data": {"name": "gtzan"}}))
    assert [r.scores for r in gtzan_rows] == [
        row.scores for row in published.PUBLISHED if row.split == "gtzan/fault_filtered"
    ]
    assert {"accuracy": 0.748} in [r.scores for r in gtzan_rows]
    assert not published.published_for(recipes.from_dict({"data": {"name": "gtzan", "split_scheme": "random"}}))
