"""Compare runs that differ in one setting (front end, seed, ...): how each represents the same test
clips, with its occlusion saliency, and the test tracks on which their predictions disagree most.

`finetune.vary` calls both on the runs it trained: `representation_section` on one run folder per
value, `disagreement_section` on each value's pooled test predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from finetune.console import progress
from finetune.data.audio import audio_duration, read_window
from finetune.evaluation import TrackPredictions
from finetune.explain import Saliency, occlusion_saliency
from finetune.report import Section, save_figure
from finetune.scoring import RunModel

FIGURE_NAME = "representations.png"
CELL_INCHES = (3.6, 3.0)  # one clip under one value: representation above its saliency
LABEL_INCHES = 1.5  # left margin for the row labels
TOP_TAGS = 3  # tags shown per prediction of a tagging model


def representation(model: torch.nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    """What a spectrogram baseline's front end makes of waveforms (B, T): (B, bins, frames), before
    normalisation; a ValueError for a model without one (waveform and AST models)."""
    if not hasattr(model, "frontend"):
        raise ValueError(f"{type(model).__name__} has no spectrogram front end to show")
    return model.frontend.represent(waveform)


# --------------------------------------------------------------------------- clips


def clip_tracks(predictions: TrackPredictions, classes: int) -> list[tuple[int, int]]:
    """(track row, class) for the `classes` classes with the most test tracks (ties: label order),
    each with the track that `predictions` gives the highest probability of that class, a track
    used once."""
    positives = (
        predictions.labels if predictions.multi_label else np.eye(len(predictions.label_names))[predictions.labels]
    ).astype(bool)  # (N, C)
    chosen: dict[int, int] = {}  # track row -> class
    for label in np.argsort(-positives.sum(axis=0), kind="stable")[:classes]:
        rows = [row for row in np.flatnonzero(positives[:, label]) if row not in chosen]
        if rows:
            chosen[max(rows, key=lambda row: predictions.probs[row, label])] = int(label)
    return [(int(row), label) for row, label in chosen.items()]


def middle_excerpt(path: str, sample_rate: int, seconds: float) -> np.ndarray:
    """`seconds` of `path` from its middle, mono at `sample_rate`: (T,)."""
    start = max(0.0, (audio_duration(path) - seconds) / 2)
    return read_window(path, sample_rate, start, seconds)


def cell(model: RunModel, path: str, label: str) -> tuple[np.ndarray, Saliency]:
    """One run's representation (bins, frames) of a clip's middle excerpt and its saliency for `label`."""
    y = middle_excerpt(path, model.sample_rate, model.clip_seconds)  # (T,)
    with torch.no_grad():
        shown = representation(model.model, torch.from_numpy(y)[None].float().to(model.device))  # (1, bins, frames)
    return shown[0].cpu().numpy(), occlusion_saliency(model, y, model.label_names.index(label))


# --------------------------------------------------------------------------- figure


def representation_figure(
    cells: dict[tuple[int, str], tuple[np.ndarray, Saliency]], rows: list[str], values: list[str]
):
    """Rows = clips (their labels `rows`), columns = values; each cell its representation above its
    saliency, all saliency maps on one colour scale."""
    size = (CELL_INCHES[0] * len(values) + LABEL_INCHES, CELL_INCHES[1] * len(rows))
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.add_gridspec(2 * len(rows), len(values), height_ratios=[2, 1] * len(rows))
    limit = max(max(float(np.abs(s.values).max()) for _, s in cells.values()), 1e-6)
    saliency_axes = []
    for (row, value), (shown, saliency) in cells.items():
        column = values.index(value)
        ax_rep, ax_sal = fig.add_subplot(grid[2 * row, column]), fig.add_subplot(grid[2 * row + 1, column])
        low, high = np.percentile(shown, (1, 99))  # a floor (silence, cut bands) must not take the whole scale
        ax_rep.imshow(shown, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
        ax_rep.set(xlabel="frames", ylabel="bins", title=f"{value}: p({saliency.label}) = {saliency.score:.2f}")
        image = ax_sal.imshow(
            saliency.values,
            origin="lower",
            aspect="auto",
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            extent=(0, saliency.values.shape[1] * saliency.segment_seconds, 0, saliency.values.shape[0]),
        )
        ax_sal.set(xlabel="seconds", ylabel="mel band")
        saliency_axes.append(ax_sal)
        if column == 0:
            ax_rep.annotate(
                rows[row],
                xy=(0, 0.5),
                xycoords="axes fraction",
                xytext=(-48, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                rotation=90,
                fontweight="bold",
            )
    fig.colorbar(image, ax=saliency_axes, fraction=0.02, label="probability drop when removed")
    return fig


def representation_section(runs: dict[str, Path], out: Path, classes: int = 3) -> Section:
    """out/representations.png: `classes` test clips (rows) as each run (columns) represents them,
    with each run's occlusion saliency for the clip's true class; its report section."""
    values = list(runs)
    if not values:
        raise ValueError("no runs to show")
    models = {value: RunModel(run) for value, run in runs.items()}
    first = TrackPredictions.load(Path(runs[values[0]]) / "predictions" / "test.npz")
    clips = clip_tracks(first, classes)
    rows = [f"{first.label_names[label]}\n{first.ids[track]}" for track, label in clips]
    jobs = [(row, value) for row in range(len(clips)) for value in values]
    cells = {
        (row, value): cell(models[value], first.paths[clips[row][0]], first.label_names[clips[row][1]])
        for row, value in progress(jobs, "representations and saliency", unit="cells")
    }
    save_figure(representation_figure(cells, rows, values), Path(out) / FIGURE_NAME)
    grid = next(iter(cells.values()))[1]
    return Section(
        "How each front end sees the music",
        images=[FIGURE_NAME],
        text=[
            f"Rows: the {len(clips)} classes with the most test tracks, each shown by the test track that "
            f"'{values[0]}' gives the highest probability of that class; each model sees one clip-length excerpt "
            "from the middle of the track, at its own sample rate. Clips: "
            + ", ".join(f"{first.ids[track]} ({first.label_names[label]})" for track, label in clips)
            + ".",
            "Top of each cell: the model's own representation of the excerpt (its front end before "
            "normalisation; bins up, frames across).",
            f"Below: occlusion saliency for the true class, the drop in its probability when one of "
            f"{len(grid.band_edges) - 1} mel bands x {grid.segment_seconds} s of the waveform's STFT is removed "
            "(red: the sound there supports the class; blue: it argues against it); one colour scale for all cells.",
        ],
    )


# --------------------------------------------------------------------------- disagreement


def on_tracks(predictions: TrackPredictions, ids: list[str]) -> np.ndarray:
    """The probabilities (N, C) of the tracks `ids`, in that order."""
    row = {track: index for index, track in enumerate(predictions.ids)}
    return predictions.probs[[row[track] for track in ids]]


def aligned(predictions: dict[str, TrackPredictions]) -> tuple[TrackPredictions, np.ndarray]:
    """The first value's predictions and every value's probabilities on its tracks: (V, N, C); a
    ValueError naming the values whose test tracks or classes differ from the first's."""
    values = list(predictions)
    if len(values) < 2:
        raise ValueError(f"disagreement needs the predictions of two values or more, not {len(values)}")
    first = predictions[values[0]]
    if len(set(first.ids)) != len(first.ids):
        raise ValueError(f"the test predictions of {values[0]} hold a track more than once")
    for value in values[1:]:
        other = predictions[value]
        if sorted(other.ids) != sorted(first.ids) or other.label_names != first.label_names:
            raise ValueError(
                f"the test predictions of {values[0]} and {value} are not on the same tracks and "
                f"classes ({len(first.ids)} and {len(other.ids)} tracks): they cannot be compared"
            )
    return first, np.stack([on_tracks(predictions[value], first.ids) for value in values])  # (V, N, C)


def disagreement(first: TrackPredictions, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per track, how much the values disagree (higher first: a sort key (N, 2)) and whether they all
    agree (N,): distinct predicted classes then the spread of the true-class probability; for tags
    the mean absolute difference of tag probabilities, agreeing when the top tags are the same."""
    if first.multi_label:
        pairs = [(a, b) for a in range(len(probs)) for b in range(a + 1, len(probs))]
        difference = np.mean([np.abs(probs[a] - probs[b]).mean(axis=1) for a, b in pairs], axis=0)  # (N,)
        tops = np.sort(np.argsort(-probs, axis=2)[:, :, :TOP_TAGS], axis=2)  # (V, N, k)
        return np.stack([difference, np.zeros_like(difference)], axis=1), (tops == tops[0]).all(axis=(0, 2))
    predicted = probs.argmax(axis=2)  # (V, N)
    distinct = np.array([len(set(column)) for column in predicted.T])  # (N,)
    truth = probs[:, np.arange(probs.shape[1]), first.labels]  # (V, N)
    return np.stack([distinct, truth.max(axis=0) - truth.min(axis=0)], axis=1), distinct == 1


def prediction_text(row: np.ndarray, label_names: list[str], multi_label: bool) -> str:
    """One value's prediction of one track from its probabilities (C,)."""
    if multi_label:
        return ", ".join(f"{label_names[c]} {row[c]:.2f}" for c in np.argsort(-row)[:TOP_TAGS])
    return f"{label_names[row.argmax()]} ({row.max():.2f})"


def truth_text(first: TrackPredictions, track: int) -> str:
    """A track's true class, or its tags."""
    labels = first.labels[track]
    if first.multi_label:
        return ", ".join(first.label_names[c] for c in np.flatnonzero(labels)) or "-"
    return first.label_names[labels]


def disagreement_section(predictions: dict[str, TrackPredictions], top: int = 10) -> Section:
    """The `top` test tracks on which the values' predictions differ most, as a table."""
    values = list(predictions)
    first, probs = aligned(predictions)  # (V, N, C)
    key, agree = disagreement(first, probs)
    order = np.lexsort((-key[:, 1], -key[:, 0]))[:top]  # stable: ties keep the track order
    table = [["track", "true"] + values]
    table += [
        [first.ids[t], truth_text(first, t)]
        + [prediction_text(probs[v, t], first.label_names, first.multi_label) for v in range(len(values))]
        for t in order
    ]
    rule = (
        f"by the mean absolute difference of tag probabilities; agreeing means the same top {TOP_TAGS} tags"
        if first.multi_label
        else "by the number of distinct predicted classes, then the spread (max - min) of the true class's "
        "probability; agreeing means the same predicted class"
    )
    return Section(
        "Test tracks the runs disagree on most",
        tables=[table],
        text=[
            f"All {len(values)} values ({', '.join(values)}) agree on {int(agree.sum())} of {len(agree)} test tracks.",
            f"The {len(order)} tracks on which they disagree most, {rule}.",
        ],
    )
