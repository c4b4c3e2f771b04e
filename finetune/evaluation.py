"""Metrics and window -> track aggregation, computed with scikit-learn (offline)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


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
    """Single-label metrics from track probabilities (N, C) and integer labels (N,)."""
    predicted = probs.argmax(axis=1)
    classes = np.arange(len(label_names))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    result = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "num_tracks": int(len(labels)),
    }
    if len(label_names) > 3:
        result["top3_accuracy"] = float(
            skm.top_k_accuracy_score(labels, probs, k=3, labels=classes)
        )
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
    }
    result["confusion_matrix"] = skm.confusion_matrix(labels, predicted, labels=classes).tolist()
    return result


def tagging_metrics(probs: np.ndarray, targets: np.ndarray, label_names: list[str]) -> dict:
    """Multi-label metrics from track probabilities (N, C) and multi-hot targets (N, C).

    Tags with no positive (or no negative) track in the split have no ROC-AUC: they are listed
    under `tags_without_positives` and left out of the macro means instead of breaking them.
    """
    targets = targets.astype(int)
    positives = targets.sum(axis=0)
    scorable = (positives > 0) & (positives < len(targets))
    per_tag = {}
    for i, name in enumerate(label_names):
        if scorable[i]:
            per_tag[name] = {
                "roc_auc": float(skm.roc_auc_score(targets[:, i], probs[:, i])),
                "ap": float(skm.average_precision_score(targets[:, i], probs[:, i])),
                "positives": int(positives[i]),
            }
    roc = [v["roc_auc"] for v in per_tag.values()]
    ap = [v["ap"] for v in per_tag.values()]
    flat_targets, flat_probs = targets[:, scorable].ravel(), probs[:, scorable].ravel()
    return {
        "roc_auc_macro": float(np.mean(roc)) if roc else float("nan"),
        "pr_auc_macro": float(np.mean(ap)) if ap else float("nan"),
        "roc_auc_micro": float(skm.roc_auc_score(flat_targets, flat_probs)) if roc else float("nan"),
        "pr_auc_micro": float(skm.average_precision_score(flat_targets, flat_probs)) if roc else float("nan"),
        "num_tracks": int(len(targets)),
        "tags_without_positives": [n for n, ok in zip(label_names, scorable) if not ok],
        "per_tag": per_tag,
    }


def evaluate_windows(
    window_logits: np.ndarray,
    window_labels: np.ndarray,
    track_index: np.ndarray,
    label_names: list[str],
    multi_label: bool,
    aggregate: str = "mean",
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Window logits (W, C) -> (metrics, track probabilities (N, C), track labels)."""
    probs = aggregate_tracks(window_probabilities(window_logits, multi_label), track_index, aggregate)
    labels = aggregate_tracks(window_labels.reshape(len(window_labels), -1), track_index, "max")
    if multi_label:
        return tagging_metrics(probs, labels, label_names), probs, labels
    labels = labels[:, 0].astype(int)
    return classification_metrics(probs, labels, label_names), probs, labels


def scalar_metrics(metrics: dict) -> dict:
    """Only the scalar entries (what the Trainer logs)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
