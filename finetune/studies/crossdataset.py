"""Cross-dataset generalisation: a trained run scored on another dataset through a genre mapping.

The model's track probabilities over its own classes become scores over the target classes that
some source class maps to (`finetune.studies.genre_maps`): summed for a genre model (probabilities of one
softmax), the largest kept for a tagger. A genre model's probability mass on classes without a
counterpart is a prediction too: "(no counterpart)", always wrong. Target tracks whose class has no
source counterpart are left out and counted per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finetune import recipe as recipes
from finetune.evaluation import TrackPredictions, classification_metrics, tagging_metrics
from finetune.metrics import SINGLE_LABEL, summary_names, task_of
from finetune.report import Section, class_table, confusion_matrix_plot, fmt, save_figure, save_study
from finetune.scoring import RunModel
from finetune.studies.genre_maps import load_mapping, packaged_mapping
from finetune.studies.protocol import EVALUATE_ON, Inputs, Study

NO_COUNTERPART = "(no counterpart)"


@dataclass
class Resolved:
    """A mapping applied to concrete label sets."""

    matrix: np.ndarray  # (S, T') 1 where source class s maps to covered target class t
    covered: list[str]  # target classes some source class maps to (T')
    unmapped_source: list[str]  # source classes with no counterpart in the target's labels
    uncovered_target: list[str]  # target classes no source class maps to


def resolve(mapping: dict[str, str | None], source: list[str], target: list[str]) -> Resolved:
    mapped = {s: mapping.get(s) for s in source}
    covered = [t for t in target if t in mapped.values()]
    matrix = np.array([[mapped[s] == t for t in covered] for s in source], dtype=np.float64).reshape(len(source), -1)
    return Resolved(
        matrix=matrix,
        covered=covered,
        unmapped_source=[s for s in source if mapped[s] not in covered],
        uncovered_target=[t for t in target if t not in covered],
    )


def mapped_scores(probs: np.ndarray, matrix: np.ndarray, multi_label: bool) -> np.ndarray:
    """Source probabilities (N, S) -> covered target scores (N, T'): sum (genres) or max (tags)."""
    if not multi_label:
        return probs @ matrix
    return np.where(matrix[None] > 0, probs[:, :, None], 0.0).max(axis=1)


def cross_metrics(predictions: TrackPredictions, resolved: Resolved, source_multi_label: bool) -> dict:
    """The registry's metrics over the covered target classes (`finetune.evaluation`'s, with their
    meaning of each macro average); target tracks of uncovered classes are left out."""
    scores = mapped_scores(predictions.probs, resolved.matrix, source_multi_label)  # (N, T')
    names = predictions.label_names
    columns = [names.index(t) for t in resolved.covered]
    if predictions.multi_label:
        return tagging_metrics(scores, predictions.labels[:, columns], resolved.covered)
    left_out = {t: int((predictions.labels == names.index(t)).sum()) for t in resolved.uncovered_target}
    keep = np.isin(predictions.labels, columns)
    if not keep.any():
        raise ValueError(f"no track here is of a class the mapping covers ({', '.join(resolved.covered)})")
    position = {column: i for i, column in enumerate(columns)}
    truth = np.array([position[label] for label in predictions.labels[keep]], dtype=int)  # (N',)
    scores = scores[keep]
    if not source_multi_label:  # mass on classes without a counterpart is a (wrong) prediction
        scores = np.hstack([scores, 1.0 - scores.sum(axis=1, keepdims=True)])
    return {**classification_metrics(scores, truth, resolved.covered), "left_out_tracks": left_out}


def target_recipe(recipe, dataset: str, overrides: list[str]):
    """The run's recipe with a fresh `data` section for `dataset` (window settings kept)."""
    data = recipe.data
    values = recipe.to_dict()
    values["data"] = {
        "name": dataset,
        "clip_seconds": data.clip_seconds,
        "eval_hop_seconds": data.eval_hop_seconds,
        "sample_rate": data.sample_rate,
        "num_workers": data.num_workers,
    }
    for override in overrides:
        if not override.startswith("data."):
            raise recipes.RecipeError(f"{override!r}: only data.* keys describe the dataset to evaluate on")
    return recipes.from_dict(recipes.apply_overrides(values, overrides))


def evaluate_on(
    run_dir,
    dataset: str,
    overrides: list[str],
    mapping: dict[str, str | None] | None = None,
    split: str = "test",
    model: RunModel | None = None,
) -> dict:
    """Score a run on `split` of another dataset; mapping default: the packaged one for the pair."""
    model = model or RunModel(run_dir)
    source = model.recipe.data.name
    if mapping is None:
        mapping = packaged_mapping(source, dataset)
    data = model.dataset(target_recipe(model.recipe, dataset, overrides))
    if split not in data:
        raise ValueError(f"{dataset} has no {split!r} split; it has {', '.join(data)}")
    predictions = model.predictions(data[split], f"{dataset} {split}")
    resolved = resolve(mapping, model.label_names, predictions.label_names)
    if not resolved.covered:
        raise ValueError(
            f"the mapping covers none of {dataset}'s classes "
            f"({', '.join(predictions.label_names[:8])}, ...); nothing to score"
        )
    return {
        "source": source,
        "target": dataset,
        "split": split,
        "mapping": mapping,
        "covered": resolved.covered,
        "unmapped_source": resolved.unmapped_source,
        "uncovered_target": resolved.uncovered_target,
        "metrics": cross_metrics(predictions, resolved, model.multi_label),
    }


def compute(inputs: Inputs) -> dict:
    mapping = load_mapping(inputs.mapping_file) if inputs.mapping_file else None
    return evaluate_on(inputs.run_dir, inputs.on, list(inputs.overrides), mapping, inputs.split, inputs.run_model())


def save(run_dir, result: dict, place: int | None = None) -> Section:
    """RUN/studies/cross_<dataset>_<split>.json (+ confusion matrix PNG) and the report section."""
    name = f"cross_{result['target']}_{result['split']}"
    metrics = result["metrics"]
    used = {s: t for s, t in result["mapping"].items() if t in result["covered"]}
    left_out = metrics.get("left_out_tracks")  # genres: tracks per uncovered class; tags: not scored
    if left_out is None:
        uncovered = "not scored: " + (", ".join(result["uncovered_target"]) or "none")
    else:
        uncovered = "tracks left out: " + (
            ", ".join(f"{t} ({left_out[t]})" for t in result["uncovered_target"]) or "none"
        )
    text = [
        f"Model trained on {result['source']}, scored on {result['target']} ({result['split']} split) through "
        "the mapping " + ", ".join(f"{s} -> {t}" for s, t in used.items()) + ".",
        "Model classes with no counterpart (predicting one is an error): "
        + (", ".join(result["unmapped_source"]) or "none")
        + ".",
        f"{result['target']} classes with no counterpart, {uncovered}.",
    ]
    keys = [k for k in (*summary_names(task_of(metrics)), "num_tracks") if k in metrics]
    tables = [[["metric", "value"]] + [[k, fmt(metrics[k])] for k in keys], class_table(metrics)]
    images = []
    if task_of(metrics) == SINGLE_LABEL:
        columns = result["covered"] + (
            [] if len(metrics["confusion_matrix"][0]) == len(result["covered"]) else [NO_COUNTERPART]
        )
        fig = confusion_matrix_plot(
            metrics["confusion_matrix"],
            result["covered"],
            columns,
            title=f"{result['target']} {result['split']} through the mapping",
        )
        images.append(str(save_figure(fig, run_dir / "studies" / f"{name}.png").relative_to(run_dir)))
    section = Section(f"Cross-dataset: {result['target']} ({result['split']})", text=text, tables=tables, images=images)
    save_study(run_dir, name, section, result, place)
    return section


STUDY = Study("cross_dataset", frozenset({EVALUATE_ON}), compute, save)
