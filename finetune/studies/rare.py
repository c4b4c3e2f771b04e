"""Rare classes: does a class's test score follow how often it was seen in training?

Score per class: F1 for genres, average precision for tags (ROC-AUC alongside). The rank (Spearman)
correlation between training count and score summarises it; undefined when every class has the
same count (a balanced dataset has no rare class).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from finetune.clips import track_table
from finetune.evaluation import TrackPredictions, track_metrics
from finetune.report import Section, fmt, save_figure, save_study, subplots
from finetune.studies.protocol import END_OF_RUN, EVALUATE, Inputs, Study

SHOWN = 5  # best and worst classes listed


def training_counts(train_split) -> np.ndarray:
    """Tracks per class (C,) in a training split."""
    _, targets = track_table(train_split)
    if targets.ndim == 2:
        return targets.sum(axis=0).astype(int)
    return np.bincount(targets, minlength=len(train_split.features["label"].names))


def rare_class_study(predictions: TrackPredictions, train_counts: np.ndarray) -> dict:
    """{"score": "f1" | "ap", "classes": [{name, train, test, score, ...}], "spearman": rho or None,
    "p_value", "not_scored": classes without test tracks (tags: without positives or negatives)}."""
    metrics = track_metrics(predictions.probs, predictions.labels, predictions.label_names)
    classes, not_scored = [], []
    for name, count in zip(predictions.label_names, train_counts):
        if predictions.multi_label:
            row = metrics["per_tag"].get(name)
            entry = row and {"test": row["positives"], "score": row["ap"], "roc_auc": row["roc_auc"]}
        else:
            row = metrics["per_class"][name]
            entry = row["support"] and {"test": row["support"], "score": row["f1"], "recall": row["recall"]}
        if entry:
            classes.append({"name": name, "train": int(count), **entry})
        else:
            not_scored.append(name)
    counts, scores = [c["train"] for c in classes], [c["score"] for c in classes]
    rho, p_value = spearmanr(counts, scores) if len(set(counts)) > 1 and len(set(scores)) > 1 else (None, None)
    return {
        "score": "ap" if predictions.multi_label else "f1",
        "classes": classes,
        "not_scored": not_scored,
        "spearman": None if rho is None else float(rho),
        "p_value": None if p_value is None else float(p_value),
    }


def rare_class_figure(result: dict):
    classes = result["classes"]
    counts = np.array([c["train"] for c in classes])
    scores = np.array([c["score"] for c in classes])
    fig, ax = subplots(figsize=(7, 4.5))
    ax.scatter(counts, scores)
    ranked = sorted(classes, key=lambda c: c["score"])
    labelled = classes if len(classes) <= 20 else ranked[:SHOWN] + ranked[-SHOWN:]
    for c in labelled:
        ax.annotate(c["name"], (c["train"], c["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(counts) and counts.max() > 10 * max(counts.min(), 1):
        ax.set_xscale("log")
    rho = "undefined" if result["spearman"] is None else f"{result['spearman']:.3f}"
    ax.set(
        xlabel="training tracks",
        ylabel=f"test {result['score']}",
        ylim=(0, 1.02),
        title=f"Test {result['score']} vs training frequency (Spearman rho {rho})",
    )
    fig.tight_layout()
    return fig


def compute(inputs: Inputs) -> dict:
    return rare_class_study(inputs.predictions, training_counts(inputs.dataset["train"]))


def save(run_dir, result: dict, place: int | None = None) -> Section:
    """RUN/studies/rare_classes.{json,png} and the report section."""
    ranked = list(enumerate(sorted(result["classes"], key=lambda c: -c["score"]), start=1))
    shown = ranked if len(ranked) <= 2 * SHOWN else ranked[:SHOWN] + ranked[-SHOWN:]  # best and worst
    table = [["rank", "class", "training tracks", "test tracks", result["score"]]]
    table += [[str(rank), c["name"], str(c["train"]), str(c["test"]), fmt(c["score"])] for rank, c in shown]
    if result["spearman"] is None:
        summary = "Spearman rank correlation undefined: every class has the same training count (or score)."
    else:
        summary = (
            f"Spearman rank correlation between training count and test {result['score']}: "
            f"{result['spearman']:.3f} (p = {result['p_value']:.3g}, {len(result['classes'])} classes)."
        )
    text = [summary] + (
        ["Not scored (no test track to score them on): " + ", ".join(result["not_scored"])]
        if result["not_scored"]
        else []
    )
    image = save_figure(rare_class_figure(result), run_dir / "studies" / "rare_classes.png")
    section = Section("Rare classes", text=text, tables=[table], images=[str(image.relative_to(run_dir))])
    save_study(run_dir, "rare_classes", section, result, place)
    return section


STUDY = Study("rare_classes", frozenset({END_OF_RUN, EVALUATE}), compute, save)
