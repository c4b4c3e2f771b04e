"""Confidence intervals by bootstrap over tracks (percentile method).

Resampling needs each metric hundreds of times, so the scores here are vectorised over classes:
ROC-AUC from average ranks (Mann-Whitney) and AP from one sort per column. Both equal
scikit-learn's values exactly, ties included (tests check it); metrics.json keeps the point
estimates from `finetune.evaluation`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import rankdata
from finetune.console import progress

from finetune.evaluation import TrackPredictions

GENRE_RESAMPLES = 1000  # from a confusion matrix: well under a second
TAG_RESAMPLES = 200  # scoring MTAT's 4,332 x 50 test scores once takes ~75 ms on one core
RESAMPLES = {False: GENRE_RESAMPLES, True: TAG_RESAMPLES}  # by multi_label
HEADLINE = {False: "accuracy", True: "roc_auc_macro"}  # by multi_label: the one metric pooled and paired scores use


def roc_auc_columns(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column of scores (N, C) against 0/1 targets (N, C); NaN where a column
    has no positive or no negative."""
    positives = targets.sum(axis=0)  # (C,)
    negatives = len(targets) - positives
    ranks = rankdata(scores, axis=0)  # (N, C) average ranks for ties
    rank_sum = (ranks * targets).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def average_precision_columns(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision of each column (scikit-learn's step rule: one point per distinct score);
    NaN where a column has no positive."""
    order = np.argsort(-scores, axis=0, kind="stable")  # (N, C)
    ranked = np.take_along_axis(scores, order, axis=0)
    hits = np.take_along_axis(targets, order, axis=0).astype(np.float64)
    true_pos = np.cumsum(hits, axis=0)  # (N, C)
    group_end = np.ones_like(ranked, dtype=bool)  # last row of each run of tied scores
    group_end[:-1] = ranked[:-1] != ranked[1:]
    seen = np.maximum.accumulate(np.where(group_end, true_pos, 0.0), axis=0)
    before = np.vstack([np.zeros((1, seen.shape[1])), seen[:-1]])  # true positives at the previous threshold
    precision = true_pos / np.arange(1, len(scores) + 1)[:, None]
    positives = true_pos[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = (np.where(group_end, true_pos - before, 0.0) * precision).sum(axis=0) / positives
    return np.where(positives > 0, ap, np.nan)


def tag_scores(probs: np.ndarray, targets: np.ndarray) -> dict:
    """Macro ROC-AUC and PR-AUC over the tags that have positives and negatives here."""
    roc = roc_auc_columns(probs, targets)
    scorable = ~np.isnan(roc)
    ap = average_precision_columns(probs[:, scorable], targets[:, scorable])
    return {"roc_auc_macro": float(np.mean(roc[scorable])), "pr_auc_macro": float(np.mean(ap))}


def genre_scores(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro precision / recall / F1 over all classes (0 where undefined, as
    scikit-learn's zero_division=0)."""
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)  # (C, C) rows = truth
    hits = np.diag(confusion).astype(np.float64)
    predicted_count, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(hits, predicted_count, out=np.zeros_like(hits), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return {"accuracy": float(hits.sum() / len(labels)), "macro_f1": float(f1.mean()),
            "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean())}


def headline_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """The HEADLINE metric of track probabilities (N, C): accuracy against labels (N,), macro
    ROC-AUC (over the tags with positives and negatives) against multi-hot labels (N, C)."""
    if labels.ndim == 2:
        return float(np.nanmean(roc_auc_columns(probs, labels)))
    return float(np.mean(probs.argmax(axis=1) == labels))


def bootstrap_draws(score: Callable[..., dict], arrays: tuple[np.ndarray, ...], resamples: int = 1000,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Each metric of `score(*arrays)` on `resamples` seeded resamples of the rows (the same rows
    of every array): {metric: (R,) draws}."""
    rng = np.random.default_rng(seed)
    count = len(arrays[0])
    draws: dict[str, list[float]] = {}
    for _ in progress(range(resamples), "bootstrap over tracks", unit="resamples"):
        rows = rng.integers(0, count, count)
        for key, value in score(*(a[rows] for a in arrays)).items():
            draws.setdefault(key, []).append(value)
    return {key: np.asarray(values, dtype=np.float64) for key, values in draws.items()}


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> list[float]:
    """[low, high]: the central `level` share of bootstrap draws (R,), NaN draws left out."""
    tail = 100 * (1 - level) / 2
    return [float(np.nanpercentile(draws, tail)), float(np.nanpercentile(draws, 100 - tail))]


def bootstrap(score: Callable[..., dict], arrays: tuple[np.ndarray, ...], resamples: int = 1000,
              level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals {metric: [low, high]} of `score(*arrays)`, rows resampled together."""
    return {key: percentile_interval(values, level)
            for key, values in bootstrap_draws(score, arrays, resamples, seed).items()}


def headline_interval(predictions: TrackPredictions, seed: int = 0) -> tuple[float, list[float]]:
    """A split's HEADLINE metric from its track predictions, with its 95 % bootstrap interval."""
    arrays = (predictions.probs, predictions.labels)
    draws = bootstrap_draws(lambda probs, labels: {"score": headline_score(probs, labels)}, arrays,
                            RESAMPLES[predictions.multi_label], seed)
    return headline_score(*arrays), percentile_interval(draws["score"])


def confusion_pairs(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(true labels (N,), predicted labels (N,)) of the tracks counted in a confusion matrix."""
    counts = np.asarray(matrix)  # (C, C)
    truth, predicted = np.indices(counts.shape)
    return np.repeat(truth.ravel(), counts.ravel()), np.repeat(predicted.ravel(), counts.ravel())


def split_intervals(metrics: dict, predictions: TrackPredictions | None,
                    seed: int = 0) -> dict[str, list[float]]:
    """Intervals for a split's headline metrics: genres from its confusion matrix (it holds every
    (truth, prediction) pair), tags from track predictions; {} when tags have no predictions."""
    if "confusion_matrix" in metrics:
        labels, predicted = confusion_pairs(metrics["confusion_matrix"])
        classes = len(metrics["confusion_matrix"])
        return bootstrap(lambda y, p: genre_scores(y, p, classes), (labels, predicted),
                         GENRE_RESAMPLES, seed=seed)
    if predictions is None or not predictions.multi_label:
        return {}
    return bootstrap(tag_scores, (predictions.probs, predictions.labels), TAG_RESAMPLES, seed=seed)
