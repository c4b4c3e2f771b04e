"""The test tracks a model gets most confidently wrong, with their scores and saliency maps.

Genres: a wrong track's confidence is the probability of the class it predicted. Tags: a track's
worst tag is the one farthest from its truth (|target - probability|); it is wrong above 0.5.
"""

from __future__ import annotations

import re

import numpy as np

from finetune.console import progress
from finetune.evaluation import TrackPredictions
from finetune.explain import explain_audio, save_saliency
from finetune.report import Section, save_study
from finetune.studies.protocol import END_OF_RUN, EVALUATE, Inputs, Study


def confident_mistakes(predictions: TrackPredictions, count: int = 10) -> list[dict]:
    """The `count` most confident errors, most confident first; `label` is what to explain."""
    probs, names, rows = predictions.probs, predictions.label_names, np.arange(len(predictions.ids))
    if predictions.multi_label:
        error = np.abs(predictions.labels - probs)  # (N, C)
        worst = error.argmax(axis=1)  # (N,)
        confidence = error[rows, worst]
        entries = [
            {
                "tag": names[c],
                "truth": "present" if predictions.labels[i, c] else "absent",
                "score": float(probs[i, c]),
                "label": names[c],
            }
            for i, c in zip(rows, worst)
        ]
        wrong = confidence > 0.5
    else:
        predicted = probs.argmax(axis=1)  # (N,)
        confidence = probs[rows, predicted]
        entries = [
            {
                "true": names[t],
                "predicted": names[p],
                "p_predicted": float(probs[i, p]),
                "p_true": float(probs[i, t]),
                "label": names[p],
            }
            for i, t, p in zip(rows, predictions.labels, predicted)
        ]
        wrong = predicted != predictions.labels
    order = [i for i in np.argsort(-confidence, kind="stable") if wrong[i]][:count]
    return [
        {"id": predictions.ids[i], "path": predictions.paths[i], "confidence": float(confidence[i]), **entries[i]}
        for i in order
    ]


def table(mistakes: list[dict], multi_label: bool) -> list[list[str]]:
    if multi_label:
        rows = [["track", "tag", "truth", "score"]]
        rows += [[m["id"], m["tag"], m["truth"], f"{m['score']:.4f}"] for m in mistakes]
    else:
        rows = [["track", "true", "predicted", "p(predicted)", "p(true)"]]
        rows += [
            [m["id"], m["true"], m["predicted"], f"{m['p_predicted']:.4f}", f"{m['p_true']:.4f}"] for m in mistakes
        ]
    return rows


def compute(inputs: Inputs, count: int = 10) -> dict:
    """The `count` most confident mistakes and the saliency maps of the first `inputs.explain`
    (`inputs.saliency_grid`: mel bands, segment seconds)."""
    mistakes = confident_mistakes(inputs.predictions, count)
    bands, segment_seconds = inputs.saliency_grid
    saliency = [
        explain_audio(
            inputs.run_model(), mistake["path"], label=mistake["label"], bands=bands, segment_seconds=segment_seconds
        )
        for mistake in progress(mistakes[: inputs.explain], "explaining mistakes", unit="tracks")
    ]
    return {"mistakes": mistakes, "multi_label": inputs.predictions.multi_label, "saliency": saliency}


def save(run_dir, result: dict, place: int | None = None) -> Section:
    """RUN/studies/mistakes.json, the saliency maps under studies/saliency/, and the report section."""
    mistakes, images = result["mistakes"], []
    for rank, (mistake, saliency) in enumerate(zip(mistakes, result["saliency"]), start=1):
        name = re.sub(r"[^\w.-]+", "_", mistake["id"])
        out = run_dir / "studies" / "saliency" / f"{rank:02d}_{name}.png"
        save_saliency(saliency, mistake["path"], out)
        images.append(str(out.relative_to(run_dir)))
    text = [
        f"{len(mistakes)} most confident errors on the test split"
        + (f"; occlusion saliency of the first {len(images)} for the label they were wrong about." if images else ".")
    ]
    if not mistakes:
        text = ["No test track is wrong."]
    section = Section(
        "Most confidently wrong test tracks",
        text=text,
        tables=[table(mistakes, result["multi_label"])] if mistakes else [],
        images=images,
    )
    save_study(run_dir, "mistakes", section, {"mistakes": mistakes}, place)
    return section


STUDY = Study("mistakes", frozenset({END_OF_RUN, EVALUATE}), compute, save)
