"""The metric registry: every metric the toolkit reports, in one tuple (`METRICS`), and what each
consumer derives from it (the report's rows, the card's, `compare`'s columns, the headline metric
of a task, the metrics `train.metric` may select, bootstrap scorers, chance levels).

A leaf module, and the one definition of every metric value: evaluation (metrics.json, the
Trainer, the probe, the studies), cross-dataset evaluation, cv, compare --vary, the search and the
bootstrap intervals all score through a `Metric`'s `score`. Adding a metric is one `Metric` here,
or `register(Metric(...))` from a module of its own: every one of them reports it.

What a macro average means, wherever it is reported:
- single-label macro precision / recall / F1: the mean over the classes that have tracks in the
  scored split (support > 0). A class without tracks there (left out of the test split by
  `data.unsplittable=leave_out`, absent from a small split or a bootstrap resample, a target class
  of cross-dataset evaluation that no model class maps to) has no recall: it is not a zero in the
  mean, and metrics.json names it under `classes_without_tracks`. Predicting it is still an error
  (accuracy, and the recall of the track's true class).
- multi-label macro ROC-AUC / PR-AUC: the mean over the tags with both positive and negative tracks
  in the split (`tags_without_positives` names the others); the micro averages pool those same
  tags' (track, tag) pairs.

The scorers are vectorised over classes, as bootstrap needs them hundreds of times: ROC-AUC from
average ranks (Mann-Whitney), AP from one sort per column, both equal to scikit-learn's values,
ties included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

SINGLE_LABEL, MULTI_LABEL, BOTH = "single_label", "multi_label", "both"  # a split's task, as metrics.json records it
LOSS = "loss"  # the validation loss: added by the Trainer, not computed from track scores

# (probs (N, C), labels (N,) class indices or (N, C) multi-hot) -> score. Single-label intervals are
# drawn from the confusion matrix, so a single-label scorer sees one-hot probabilities of the
# predicted class: it may depend only on the prediction (argmax).
Scorer = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Metric:
    """One metric: its key in metrics.json and what every consumer needs to know about it."""

    name: str  # key in metrics.json, in the report table and in `train.metric`
    label: str  # as model cards print it
    task: str  # SINGLE_LABEL, MULTI_LABEL or BOTH
    higher_is_better: bool | None = True  # None: a count, not a score (never selects a checkpoint)
    min_labels: int = 0  # computed only with more classes / tags than this (top-k, @k)
    headline: bool = False  # THE metric of its task: the run summary, pooled (cv) and paired scores
    summary: bool = False  # in the short lists: model cards, console, learning curves, cv, studies
    compared: bool = False  # a column of `compare`
    chance: Callable[[np.ndarray], float] | None = None  # an uninformed model's score, from the labels
    score: Scorer | None = None  # computes it, everywhere (None: the loss and the track count only)
    reads_scores: bool = False  # single-label: reads the scores, not only the predicted class (top-k):
    # no interval from a confusion matrix

    def applies(self, task: str, num_labels: int | None = None) -> bool:
        """Reported for `task` with `num_labels` classes or tags (None: as many as any metric needs)."""
        return self.task in (task, BOTH) and (num_labels is None or num_labels > self.min_labels)


# --------------------------------------------------------------------------- scorers


def roc_auc_columns(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column of scores (N, C) against 0/1 targets (N, C); NaN where a column
    has no positive or no negative."""
    from scipy.stats import rankdata  # here, not on top: the console imports this module and stays light

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


def mean_or_nan(values: np.ndarray) -> float:
    """The mean; NaN, without numpy's empty-slice warning, when there is nothing to average (a small
    bootstrap resample can hold no scorable tag; its NaN draw is left out of the interval)."""
    return float(values.mean()) if values.size else float("nan")


def scorable_tags(targets: np.ndarray) -> np.ndarray:
    """(C,) bool: the tags of multi-hot targets (N, C) with both positive and negative tracks."""
    positives = targets.sum(axis=0)  # (C,)
    return (positives > 0) & (positives < len(targets))


def roc_auc_macro(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean ROC-AUC over the tags with positives and negatives here."""
    roc = roc_auc_columns(probs, targets)
    return mean_or_nan(roc[~np.isnan(roc)])


def pr_auc_macro(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean AP over the tags with positives and negatives here (the tags ROC-AUC scores)."""
    scorable = scorable_tags(targets)
    return mean_or_nan(average_precision_columns(probs[:, scorable], targets[:, scorable]))


def micro(columns: Callable[[np.ndarray, np.ndarray], np.ndarray], probs: np.ndarray, targets: np.ndarray) -> float:
    """A per-column score of the (track, tag) pairs of the scorable tags pooled into one column."""
    scorable = scorable_tags(targets)
    if not scorable.any():
        return float("nan")
    return float(columns(probs[:, scorable].reshape(-1, 1), targets[:, scorable].reshape(-1, 1))[0])


def hits_at_k(probs: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positives among each track's k top-scored tags (N,), each track's positives (N,))."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return np.take_along_axis(targets, top, axis=1).sum(axis=1), targets.sum(axis=1)


def precision_at_k(k: int, probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean over tracks of the share of positives among their k top-scored tags."""
    hits, _ = hits_at_k(probs, targets, k)
    return float(np.mean(hits / k))


def recall_at_k(k: int, probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean over the tracks with a positive of the share of their positives in their k top tags."""
    hits, positives = hits_at_k(probs, targets, k)
    has = positives > 0
    return mean_or_nan(hits[has] / positives[has])


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def top_k_accuracy(k: int, probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of tracks whose class is among the k top-scored (ties broken by class order)."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def confusion(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, C) counts of the predicted classes (argmax of probs (N, C), the columns) against labels
    (N,) (the rows)."""
    num_classes = probs.shape[1]
    counts = np.bincount(labels * num_classes + probs.argmax(axis=1), minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


RATES = ("precision", "recall", "f1")  # per-class rates, in the order `class_rates` returns them


def class_rates(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (precision, recall, F1, support), each (C,), of the predicted classes (argmax of
    probs (N, C)) over all C classes; a rate is 0 where undefined (scikit-learn's zero_division=0)."""
    counts = confusion(probs, labels)
    hits = np.diag(counts).astype(np.float64)
    predicted_count, support = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(hits, predicted_count, out=np.zeros_like(hits), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return precision, recall, f1, support


def macro_rate(rate: str, probs: np.ndarray, labels: np.ndarray) -> float:
    """The macro average of a per-class rate (`RATES`): its mean over the classes with tracks here."""
    *rates, support = class_rates(probs, labels)
    return mean_or_nan(rates[RATES.index(rate)][support > 0])


# --------------------------------------------------------------------------- the registry


def at_k(k: int) -> tuple[Metric, Metric]:
    """precision@k and recall@k of a tagger (reported with more than k tags)."""
    return (
        Metric(
            f"precision_at_{k}",
            f"Precision@{k}",
            MULTI_LABEL,
            min_labels=k,
            compared=k == 5,
            score=partial(precision_at_k, k),
        ),
        Metric(f"recall_at_{k}", f"Recall@{k}", MULTI_LABEL, min_labels=k, score=partial(recall_at_k, k)),
    )


def top_k(k: int) -> Metric:
    """Top-k accuracy of a genre model (reported with more than k classes)."""
    return Metric(
        f"top{k}_accuracy",
        f"Top-{k} accuracy",
        SINGLE_LABEL,
        min_labels=k,
        reads_scores=True,
        score=partial(top_k_accuracy, k),
    )


METRICS: tuple[Metric, ...] = (  # in the order reports list them
    Metric(LOSS, "Loss", BOTH, higher_is_better=False),
    Metric(
        "accuracy",
        "Accuracy",
        SINGLE_LABEL,
        headline=True,
        summary=True,
        compared=True,
        chance=lambda labels: 1.0 / float(labels.max() + 1),
        score=accuracy,
    ),
    Metric("macro_f1", "Macro F1", SINGLE_LABEL, summary=True, compared=True, score=partial(macro_rate, "f1")),
    Metric("macro_precision", "Macro precision", SINGLE_LABEL, score=partial(macro_rate, "precision")),
    Metric("macro_recall", "Macro recall", SINGLE_LABEL, compared=True, score=partial(macro_rate, "recall")),
    top_k(3),
    top_k(5),
    Metric(
        "roc_auc_macro",
        "ROC-AUC (macro)",
        MULTI_LABEL,
        headline=True,
        summary=True,
        compared=True,
        chance=lambda targets: 0.5,
        score=roc_auc_macro,
    ),
    Metric(
        "pr_auc_macro",
        "PR-AUC (macro)",
        MULTI_LABEL,
        summary=True,
        compared=True,
        chance=lambda targets: float(targets.mean()),
        score=pr_auc_macro,
    ),  # the mean tag prevalence
    Metric("roc_auc_micro", "ROC-AUC (micro)", MULTI_LABEL, score=partial(micro, roc_auc_columns)),
    Metric("pr_auc_micro", "PR-AUC (micro)", MULTI_LABEL, score=partial(micro, average_precision_columns)),
    *at_k(3),
    *at_k(5),
    *at_k(10),
    Metric("num_tracks", "Tracks", BOTH, higher_is_better=None),
)


def register(metric: Metric) -> Metric:
    """Add `metric` to `METRICS` (after the built-in ones): evaluation, cross-dataset evaluation, cv,
    compare, the search, the intervals, reports and cards report it from then on. ValueError when
    its name is taken, its task unknown, or it has no `score`."""
    global METRICS
    if any(m.name == metric.name for m in METRICS):
        raise ValueError(f"a metric named {metric.name!r} is registered already; choose another name")
    if metric.task not in (SINGLE_LABEL, MULTI_LABEL, BOTH):
        raise ValueError(
            f"metric {metric.name!r}: task {metric.task!r} is none of {SINGLE_LABEL}, {MULTI_LABEL}, {BOTH}"
        )
    if metric.score is None:
        raise ValueError(f"metric {metric.name!r} has no score(probs, labels): nothing could compute it")
    METRICS = (*METRICS, metric)
    return metric


# --------------------------------------------------------------------------- derived lists


def metrics_for(task: str | None = None, num_labels: int | None = None) -> tuple[Metric, ...]:
    """The registered metrics of `task` (None: every task) with `num_labels` classes or tags."""
    return tuple(m for m in METRICS if task is None or m.applies(task, num_labels))


def named(name: str) -> Metric:
    """The registered metric called `name`; KeyError naming the registered ones."""
    for metric in METRICS:
        if metric.name == name:
            return metric
    raise KeyError(f"no metric {name!r}; registered: {', '.join(m.name for m in METRICS)}")


def headline(task: str) -> Metric:
    """The one metric that heads a task's results."""
    return next(m for m in metrics_for(task) if m.headline)


def summary_names(task: str | None = None) -> list[str]:
    """The short list of a task (None: of every task) that cards, the console and the studies show."""
    return [m.name for m in metrics_for(task) if m.summary]


def compared_names(task: str) -> list[str]:
    """The columns `compare` shows for runs of `task`."""
    return [m.name for m in metrics_for(task) if m.compared]


def selectable_names(task: str, num_labels: int | None = None) -> list[str]:
    """The validation metrics that may pick the best checkpoint (`train.metric`): the scores."""
    return [m.name for m in metrics_for(task, num_labels) if m.higher_is_better is not None]


def scores(task: str, probs: np.ndarray, labels: np.ndarray, predicted_only: bool = False) -> dict[str, float]:
    """{name: score} of every metric of `task` with a scorer, for probs (N, C) and labels (N,) or
    (N, C); `predicted_only`: only those that read nothing but the predicted class (a confusion
    matrix's pairs)."""
    return {
        m.name: m.score(probs, labels)
        for m in metrics_for(task, probs.shape[1])
        if m.score and not (predicted_only and m.reads_scores)
    }


# --------------------------------------------------------------------------- the task of a split


def task_name(multi_label: bool) -> str:
    return MULTI_LABEL if multi_label else SINGLE_LABEL


def task_of(split_metrics: dict) -> str:
    """A split's task as its metrics record it (`"task"`); for run folders written before they did,
    guessed as before: a tagger's metrics have per-tag scores."""
    return split_metrics.get("task") or task_name("per_tag" in split_metrics)


def selection(metric: str | None) -> tuple[str, bool]:
    """(the validation metric that picks the best checkpoint and drives early stopping, greater is
    better) for `train.metric`; by default (None) the validation loss, which keeps falling where the
    accuracy of a few validation tracks has long plateaued."""
    metric = metric or LOSS
    return metric, named(metric).higher_is_better
