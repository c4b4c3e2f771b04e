"""Paired tests of two models scored on the same test tracks.

Both models' predictions are resampled together (the same tracks in every resample), so the
interval of the difference measures how the models disagree, not how hard the sampled tracks are:
it is far narrower than two separate intervals side by side. Genres add McNemar's exact test on
the tracks that exactly one of the two models gets right.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from finetune.evaluation import TrackPredictions
from finetune.metrics import headline
from finetune.stats.bootstrap import RESAMPLES, bootstrap_draws, headline_score, percentile_interval


def align(a: TrackPredictions, b: TrackPredictions) -> TrackPredictions:
    """`b` reordered to `a`'s track order; ValueError when the two hold other tracks or labels."""
    if len(a.ids) != len(b.ids) or set(a.ids) != set(b.ids):
        shared = len(set(a.ids) & set(b.ids))
        raise ValueError(
            f"a paired test needs the same tracks: A has {len(a.ids)}, B has {len(b.ids)}, {shared} of them in both"
        )
    if a.probs.shape != b.probs.shape:
        raise ValueError(f"a paired test needs the same classes: A scores {a.probs.shape[1]}, B {b.probs.shape[1]}")
    position = {track: i for i, track in enumerate(b.ids)}
    order = np.array([position[track] for track in a.ids])  # (N,) rows of b in a's order
    if not np.array_equal(b.labels[order], a.labels):
        raise ValueError("a paired test needs the same labels: A and B label some tracks differently")
    return TrackPredictions(list(a.ids), [b.paths[i] for i in order], b.probs[order], b.labels[order], b.label_names)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap draws (R,) of a difference: twice the
    smaller share of draws on either side of 0, each count + 1 over R + 1 so it is never 0."""
    draws = draws[~np.isnan(draws)]
    side = min(np.sum(draws <= 0), np.sum(draws >= 0))
    return float(min(1.0, 2 * (side + 1) / (len(draws) + 1)))


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> dict:
    """McNemar's exact test on per-track correctness (N,) bools: b = tracks only A gets right,
    c = only B; the two-sided binomial p of b among the b + c discordant tracks at 1/2."""
    b, c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"mcnemar_p": float(p), "b": b, "c": c}


def paired_test(a: TrackPredictions, b: TrackPredictions, seed: int = 0, level: float = 0.95) -> dict:
    """A - B on the headline metric (accuracy, or macro ROC-AUC for tags), matched by track id:
    the difference, its paired-bootstrap interval and two-sided p-value (tracks resampled jointly,
    seeded); for genres also McNemar's exact p with its b and c."""
    b = align(a, b)

    def difference(probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray) -> dict:
        return {"difference": headline_score(probs_a, labels) - headline_score(probs_b, labels)}

    arrays = (a.probs, b.probs, a.labels)
    draws = bootstrap_draws(difference, arrays, RESAMPLES[a.task], seed)["difference"]  # (R,)
    result = {
        "metric": headline(a.task).name,
        "tracks": len(a.ids),
        "difference": difference(*arrays)["difference"],
        "interval": percentile_interval(draws, level),
        "bootstrap_p": bootstrap_p(draws),
        "resamples": len(draws),
    }
    if not a.multi_label:
        result.update(mcnemar(a.probs.argmax(axis=1) == a.labels, b.probs.argmax(axis=1) == b.labels))
    return result
