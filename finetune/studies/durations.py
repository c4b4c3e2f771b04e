"""Duration study: the test set re-scored with every track cut to a few seconds.

For each duration d, each test track is cut to an excerpt of d seconds, once from the start and
once from a random offset (seeded, uniform over the positions that fit), and the excerpt is
scored as evaluation scores a whole track: clip-length windows (an excerpt shorter than a clip
is looped to the clip length, as a short track is), probabilities averaged. A duration at least
as long as a track keeps the whole track.
"""

from __future__ import annotations

import logging

import numpy as np

from finetune.clips import track_table, unreadable_tracks, window_starts
from finetune.data.audio import AudioReadError, audio_duration
from finetune.evaluation import TrackPredictions, aggregate_tracks, track_metrics
from finetune.metrics import metrics_for
from finetune.report import Section, fmt, save_figure, save_study, subplots
from finetune.scoring import Excerpts, RunModel
from finetune.studies.protocol import END_OF_RUN, EVALUATE, Inputs, Study

logger = logging.getLogger("finetune")
MODES = ("start", "random")


def excerpt_windows(length: float, start: float, seconds: float, clip: float, hop: float):
    """(start, seconds) of the windows covering [start, start + seconds) of a track of `length` s."""
    span = min(seconds, length - start)
    return [(start + s, min(clip, span)) for s in window_starts(span, clip, hop)]


def duration_study(model: RunModel, split, full: TrackPredictions, durations: list[float], seed: int = 0) -> dict:
    """Scores of `split` cut to each duration, next to `full` (its whole-track predictions):
    {"rows": [{duration, seconds, start: metrics, random: metrics}], "full": metrics, "chance": ...}."""
    paths, targets = track_table(split)
    lengths = {}
    for track, path in enumerate(paths):
        try:
            lengths[track] = audio_duration(path)
        except AudioReadError as err:
            logger.warning("duration study leaves out %s", err)
    rng = np.random.default_rng(seed)
    clip, hop = model.clip_seconds, model.hop_seconds
    unique: dict[tuple[int, float, float], int] = {}  # window -> row of the scored windows
    plan = {}  # (duration, mode) -> (window rows, track of each window)
    for d in durations:
        for mode in MODES:
            rows, tracks = [], []
            for track, length in lengths.items():
                start = float(rng.uniform(0, max(0.0, length - d))) if mode == "random" else 0.0
                for window in excerpt_windows(length, start, d, clip, hop):
                    rows.append(unique.setdefault((track, *window), len(unique)))
                    tracks.append(track)
            plan[d, mode] = (np.asarray(rows), np.asarray(tracks))
    windows = Excerpts(paths, list(unique), model.sample_rate, clip)
    window_probs, scored = model.score(windows, f"scoring {len(durations)} durations")  # (U, C), (U,)
    unreadable = unreadable_tracks(scored)  # tracks left out at every duration
    shown = [m for m in metrics_for(full.task) if m.summary]
    keys = [m.name for m in shown]
    result = {
        "rows": [],
        "seed": seed,
        "durations": durations,
        "full": {k: track_metrics(full.probs, full.labels, full.label_names)[k] for k in keys},
        "chance": {m.name: m.chance(targets) if m.chance else None for m in shown},
    }
    for d in durations:
        row = {"duration": d, "seconds": float(np.mean([min(d, length) for length in lengths.values()]))}
        for mode in MODES:
            rows, tracks = plan[d, mode]
            keep = ~np.isin(tracks, unreadable)
            rows, tracks = rows[keep], tracks[keep]
            probs = aggregate_tracks(window_probs[rows], tracks, model.windowing.aggregate)
            metrics = track_metrics(probs, targets[np.unique(tracks)], model.label_names)
            row[mode] = {k: metrics[k] for k in keys}
        result["rows"].append(row)
    return result


def duration_figure(result: dict):
    keys = list(result["full"])
    fig, axes = subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    x = [row["duration"] for row in result["rows"]]
    for ax, key in zip(np.atleast_1d(axes), keys):
        for mode, label in zip(MODES, ("from the start", "random offset")):
            ax.plot(x, [row[mode][key] for row in result["rows"]], marker="o", label=label)
        ax.axhline(result["full"][key], color="gray", linestyle="--", label="whole track")
        if result["chance"][key] is not None:
            ax.axhline(result["chance"][key], color="gray", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{d:g}" for d in x])
        ax.set(xlabel="input seconds", ylabel=key, title=f"Test {key} vs input length", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def compute(inputs: Inputs) -> dict:
    return duration_study(inputs.run_model(), inputs.dataset["test"], inputs.predictions, inputs.durations, inputs.seed)


def save(run_dir, result: dict, place: int | None = None) -> Section:
    """RUN/studies/durations.{json,png} and the report section."""
    keys = list(result["full"])
    table = [["seconds"] + [f"{key} ({mode})" for key in keys for mode in MODES]]
    table += [
        [f"{row['duration']:g} (mean kept {row['seconds']:.1f})"]
        + [fmt(row[mode][key]) for key in keys for mode in MODES]
        for row in result["rows"]
    ]
    table.append(["whole track"] + [fmt(result["full"][key]) for key in keys for _ in MODES])
    image = save_figure(duration_figure(result), run_dir / "studies" / "durations.png")
    section = Section(
        "Input duration",
        text=[
            "Each test track cut to the given length, from the start and from a random offset "
            f"(seed {result['seed']}), then scored in clip-length windows averaged per track."
        ],
        tables=[table],
        images=[str(image.relative_to(run_dir))],
    )
    save_study(run_dir, "durations", section, result, place)
    return section


STUDY = Study("durations", frozenset({END_OF_RUN, EVALUATE}), compute, save, asked_by="durations")
