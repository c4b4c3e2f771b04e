"""Window -> track aggregation, a split's entries in metrics.json (the registry's scores,
`finetune.metrics`, with the per-class or per-tag tables beside them), and the track-level
predictions file that studies and reports read (RUN/predictions/<split>.npz).

Loads no torch (`finetune.stats` reads `TrackPredictions` without it): the one use of
`finetune.clips` imports it where windows are read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune.metrics import (
    MULTI_LABEL,
    SINGLE_LABEL,
    average_precision_columns,
    class_rates,
    confusion,
    roc_auc_columns,
    scorable_tags,
    scores,
    task_name,
)


def window_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Logits (W, C) -> probabilities (W, C): sigmoid for tagging, softmax for genres."""
    logits = logits.astype(np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def aggregate_tracks(window_values: np.ndarray, track_index: np.ndarray, how: str = "mean") -> np.ndarray:
    """Rows (W, ...) grouped by `track_index` (W,) -> (N, ...), tracks in ascending index order."""
    tracks, inverse = np.unique(track_index, return_inverse=True)
    out = np.zeros((len(tracks),) + window_values.shape[1:], dtype=np.float64)
    if how == "mean":
        np.add.at(out, inverse, window_values)
        out /= np.bincount(inverse, minlength=len(tracks)).reshape((-1,) + (1,) * (out.ndim - 1))
    elif how == "max":
        out[:] = -np.inf
        np.maximum.at(out, inverse, window_values)
    else:
        raise ValueError(f"unknown aggregation {how!r}; use mean or max")
    return out


def classification_metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """Single-label metrics from track probabilities (N, C) and integer labels (N,): the registry's
    scores, the per-class table and the confusion matrix. `label_names` names the classes `labels`
    may take, the first of probs' columns; a further column is a prediction that is always wrong
    (cross-dataset: no counterpart), a column of predictions only in the confusion matrix."""
    precision, recall, f1, support = class_rates(probs, labels)
    return {
        "task": SINGLE_LABEL,
        **scores(SINGLE_LABEL, probs, labels),
        "num_tracks": int(len(labels)),
        "classes_without_tracks": [name for name, count in zip(label_names, support) if not count],
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(label_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion(probs, labels)[: len(label_names)].tolist(),  # rows: label_names
    }


def tagging_metrics(probs: np.ndarray, targets: np.ndarray, label_names: list[str]) -> dict:
    """Multi-label metrics from track probabilities (N, C) and multi-hot targets (N, C): the
    registry's scores and the per-tag table.

    Tags with no positive (or no negative) track in the split have no ROC-AUC: they are listed
    under `tags_without_positives` and left out of the macro and micro averages instead of breaking them.
    """
    targets = targets.astype(int)
    positives, scorable = targets.sum(axis=0), scorable_tags(targets)
    roc, ap = roc_auc_columns(probs, targets), average_precision_columns(probs, targets)
    return {
        "task": MULTI_LABEL,
        **scores(MULTI_LABEL, probs, targets),
        "num_tracks": int(len(targets)),
        "tags_without_positives": [n for n, ok in zip(label_names, scorable) if not ok],
        "per_tag": {
            name: {"roc_auc": float(roc[i]), "ap": float(ap[i]), "positives": int(positives[i])}
            for i, name in enumerate(label_names)
            if scorable[i]
        },
    }


DEFAULT_TAG_THRESHOLD = 0.5  # a tag with no positive validation track keeps this threshold


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, fallback: float = DEFAULT_TAG_THRESHOLD) -> np.ndarray:
    """One decision threshold per tag from track probabilities (N, C) and multi-hot targets (N, C):
    the threshold maximising that tag's F1 when a tag is predicted for scores >= threshold.

    Candidates are the tag's distinct scores; among equally good ones the highest wins (fewest
    predicted positives). The returned threshold is the midpoint between the best candidate and
    the next lower distinct score (the candidate itself when it is the lowest score), so the
    validation decisions stay the same while unseen scores get a margin on both sides. A tag
    with no positive track has no F1 to maximise and gets `fallback` (0.5 by default). Returns
    (C,) floats in [0, 1] for probabilities in [0, 1].
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets) > 0
    if probs.shape != targets.shape or probs.ndim != 2:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} must both be (N, C)")
    thresholds = np.full(probs.shape[1], float(fallback))
    for c in range(probs.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0:
            continue
        order = np.argsort(-probs[:, c], kind="stable")
        scores, hits = probs[order, c], targets[order, c]
        tp = np.cumsum(hits)  # true positives when predicting the i+1 top-scored tracks
        last = np.r_[scores[1:] != scores[:-1], True]  # last row of each distinct score: ties go together
        tp, predicted, candidates = tp[last], np.flatnonzero(last) + 1, scores[last]
        f1 = 2 * tp / (predicted + positives)
        best = int(np.argmax(f1))  # first maximum: the highest threshold
        below = candidates[best + 1] if best + 1 < len(candidates) else candidates[best]
        thresholds[c] = (candidates[best] + below) / 2
    return thresholds


def readable_windows(track_index: np.ndarray) -> np.ndarray:
    """(W,) bool: False for every window of a track that has a window that could not be read
    (marked by `finetune.clips.unreadable_window`)."""
    from finetune.clips import unreadable_tracks  # here, not on top: clips loads torch

    return (track_index >= 0) & ~np.isin(track_index, unreadable_tracks(track_index))


def evaluate_windows(
    window_logits: np.ndarray,
    window_labels: np.ndarray,
    track_index: np.ndarray,
    label_names: list[str],
    multi_label: bool,
    aggregate: str = "mean",
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Window logits (W, C) -> (metrics, track probabilities (N, C), track labels); tracks with an
    unreadable window are left out."""
    keep = readable_windows(track_index)
    window_logits, window_labels, track_index = window_logits[keep], window_labels[keep], track_index[keep]
    probs = aggregate_tracks(window_probabilities(window_logits, multi_label), track_index, aggregate)
    labels = aggregate_tracks(window_labels.reshape(len(window_labels), -1), track_index, "max")
    if not multi_label:
        labels = labels[:, 0].astype(int)
    return track_metrics(probs, labels, label_names), probs, labels


def track_metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict:
    """Tagging metrics for multi-hot labels (N, C), classification metrics for labels (N,)."""
    return (tagging_metrics if labels.ndim == 2 else classification_metrics)(probs, labels, label_names)


def scalar_metrics(metrics: dict) -> dict:
    """Only the scalar entries (what the Trainer logs)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def track_predictions(
    ids: list[str],
    paths: list[str],
    track_index: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
) -> TrackPredictions:
    """A split's track-level predictions from `evaluate_windows` (its rows: the tracks whose
    windows all read, in track order), with each track's id and path from the split's `ids` and
    `paths` (indexed by the windows' `track_index` (W,))."""
    tracks = np.unique(track_index[readable_windows(track_index)])
    return TrackPredictions([ids[t] for t in tracks], [paths[t] for t in tracks], probs, labels, label_names)


@dataclass
class TrackPredictions:
    """Track-level scores of one split, in the order of `ids`."""

    ids: list[str]
    paths: list[str]
    probs: np.ndarray  # (N, C) softmax (genres) or sigmoid (tags) probabilities
    labels: np.ndarray  # (N,) int labels, or (N, C) multi-hot targets
    label_names: list[str]  # classes of `labels`; probs' columns are the model's (others across datasets)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    @property
    def task(self) -> str:
        return task_name(self.multi_label)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            ids=np.asarray(self.ids, dtype=str),
            paths=np.asarray(self.paths, dtype=str),
            probs=self.probs,
            labels=self.labels,
            label_names=np.asarray(self.label_names, dtype=str),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrackPredictions:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                ids=data["ids"].tolist(),
                paths=data["paths"].tolist(),
                probs=data["probs"],
                labels=data["labels"],
                label_names=data["label_names"].tolist(),
            )
