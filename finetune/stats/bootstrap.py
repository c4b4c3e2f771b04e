"""Confidence intervals by bootstrap over tracks (percentile method), with the scorers of the
metric registry (`finetune.metrics`), the same that give metrics.json's point estimates.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from finetune.console import progress
from finetune.evaluation import TrackPredictions
from finetune.metrics import MULTI_LABEL, SINGLE_LABEL, headline, scores, task_name, task_of

# by task: from a confusion matrix, 1000 take well under a second; scoring MTAT's 4,332 x 50 test
# scores once takes ~75 ms on one core
RESAMPLES = {SINGLE_LABEL: 1000, MULTI_LABEL: 200}


def genre_scores(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict:
    """The single-label scores that read only the predicted class, of predicted classes (N,)
    against labels (N,) over `num_classes` classes."""
    return scores(SINGLE_LABEL, np.eye(num_classes)[predicted], labels, predicted_only=True)


def headline_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """The headline metric of track probabilities (N, C): accuracy against labels (N,), macro
    ROC-AUC (over the tags with positives and negatives) against multi-hot labels (N, C)."""
    return headline(task_name(labels.ndim == 2)).score(probs, labels)


def bootstrap_draws(
    score: Callable[..., dict], arrays: tuple[np.ndarray, ...], resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
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


def bootstrap(
    score: Callable[..., dict],
    arrays: tuple[np.ndarray, ...],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile intervals {metric: [low, high]} of `score(*arrays)`, rows resampled together."""
    return {
        key: percentile_interval(values, level)
        for key, values in bootstrap_draws(score, arrays, resamples, seed).items()
    }


def headline_interval(predictions: TrackPredictions, seed: int = 0) -> tuple[float, list[float]]:
    """A split's headline metric from its track predictions, with its 95 % bootstrap interval."""
    arrays = (predictions.probs, predictions.labels)
    draws = bootstrap_draws(
        lambda probs, labels: {"score": headline_score(probs, labels)}, arrays, RESAMPLES[predictions.task], seed
    )
    return headline_score(*arrays), percentile_interval(draws["score"])


def confusion_pairs(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(true labels (N,), predicted labels (N,)) of the tracks counted in a confusion matrix."""
    counts = np.asarray(matrix)  # (C, C)
    truth, predicted = np.indices(counts.shape)
    return np.repeat(truth.ravel(), counts.ravel()), np.repeat(predicted.ravel(), counts.ravel())


def split_intervals(metrics: dict, predictions: TrackPredictions | None, seed: int = 0) -> dict[str, list[float]]:
    """Intervals for a split's metrics that have a scorer: genres from its confusion matrix (it
    holds every (truth, prediction) pair), tags from track predictions; {} without them."""
    task = task_of(metrics)
    if task == SINGLE_LABEL and "confusion_matrix" in metrics:
        labels, predicted = confusion_pairs(metrics["confusion_matrix"])
        classes = len(metrics["confusion_matrix"][0])  # its columns: every class predicted
        return bootstrap(lambda y, p: genre_scores(y, p, classes), (labels, predicted), RESAMPLES[task], seed=seed)
    if task == MULTI_LABEL and predictions is not None:
        return bootstrap(partial(scores, task), (predictions.probs, predictions.labels), RESAMPLES[task], seed=seed)
    return {}
