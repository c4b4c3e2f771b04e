"""Inference on audio of any length: read in windows, score in batches, average per file.

Windows are read one at a time (soundfile seek), so memory stays flat however long the file is;
the next batch is read and featurised in a thread while the model scores this one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import soxr
import torch

from finetune.bundle import ModelBundle
from finetune.clips import Windowing, fit_length
from finetune.data.audio import AUDIO_EXTENSIONS, AudioReadError, audio_duration, read_windows, to_mono
from finetune.evaluation import aggregate_tracks, window_probabilities
from finetune.machine import local_accelerator
from finetune.models import load_model

DEFAULT_CLIP_SECONDS = 5.0
DEFAULT_TOP_K = 5  # labels reported when no threshold applies
# Audio shorter than this many seconds, or than this fraction of a window, is looped many times to
# fill one: whatever the model says of it rests on almost nothing, so the result is marked.
SHORT_SECONDS = 0.1
SHORT_FRACTION = 0.01

logger = logging.getLogger("finetune.predict")

T = TypeVar("T")


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of `items` (never None), each one produced in a worker thread while the caller
    works on the one before (decoding releases the GIL, so reading overlaps the model). Errors
    come in order."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def tag_thresholds(config) -> np.ndarray | None:
    """A tagging model's tuned per-tag thresholds (`config.tag_thresholds`, aligned with
    id2label), or None when it was saved without them."""
    values = getattr(config, "tag_thresholds", None)
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (config.num_labels,):
        raise ValueError(f"config.tag_thresholds has {values.size} values for {config.num_labels} labels")
    return values


def model_folder(path: str | Path) -> Path:
    """The model/ of a run folder, else `path` itself (a model folder, checked by `load_model`)."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").is_file() else path


def audio_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the audio files inside them (sorted); a ValueError
    naming the inputs when that leaves no file at all."""
    inputs = [Path(item) for item in inputs]
    files = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            files.append(item)
    if not files:
        raise ValueError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    return files


class Predictor:
    """Scores audio files or arrays with a trained model, in the windows the run evaluated with
    (`Windowing`: length, hop, aggregation), so a test file's scores here equal its row of the
    run's predictions/test.npz."""

    def __init__(self, bundle: ModelBundle, windowing: Windowing, batch_size: int = 16, device: str | None = None):
        self.bundle = bundle
        self.device = device or local_accelerator()
        self.model = bundle.model.to(self.device).eval()
        self.windowing, self.batch_size = windowing, batch_size
        config = self.model.config
        self.multi_label = config.problem_type == "multi_label_classification"
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.tag_thresholds = tag_thresholds(config) if self.multi_label else None

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> Predictor:
        """Load from a run folder or model folder; the windows are the ones it was evaluated with."""
        bundle = load_model(model_folder(path))
        return cls(bundle, Windowing.of_config(bundle.model.config, DEFAULT_CLIP_SECONDS), **kwargs)

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    def _windows(self, source, sr: int | None):
        """(duration, iterator of (start, waveform (T,))) for a path or an array."""
        clip = self.windowing.clip_seconds
        size = self.windowing.samples(self.sample_rate)
        if isinstance(source, (str, Path)):
            duration = audio_duration(source)
            starts = self.windowing.starts(duration)
            windows = read_windows(source, self.sample_rate, starts, clip)
            return duration, ((s, fit_length(y, size)) for s, y in zip(starts, windows))
        if sr is None:
            raise ValueError("an array needs its sample rate: predict(array, sr=...)")
        y = np.asarray(source, dtype=np.float32)
        if y.ndim == 2:  # (T, channels)
            y = to_mono(y)
        if sr != self.sample_rate:
            y = soxr.resample(y, sr, self.sample_rate)
        duration = len(y) / self.sample_rate
        starts = self.windowing.starts(duration)
        return duration, ((s, fit_length(y[int(s * self.sample_rate) :][:size], size)) for s in starts)

    def _batches(self, windows) -> Iterator[tuple[list[float], dict]]:
        """(starts, model inputs) per batch of `batch_size` windows."""
        while batch := list(itertools.islice(windows, self.batch_size)):
            starts, waveforms = zip(*batch)
            yield (
                list(starts),
                self.bundle.feature_extractor(list(waveforms), sampling_rate=self.sample_rate, return_tensors="pt"),
            )

    @torch.no_grad()
    def _score(self, inputs: dict) -> np.ndarray:
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model(**inputs).logits.float().cpu().numpy()  # (B, C)

    def probabilities(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Waveforms at `sample_rate`, each (T,) -> probabilities (B, C)."""
        inputs = self.bundle.feature_extractor(waveforms, sampling_rate=self.sample_rate, return_tensors="pt")
        return window_probabilities(self._score(inputs), self.multi_label)

    def track_scores(self, window_probs: np.ndarray) -> np.ndarray:
        """One track's window probabilities (W, C) -> its scores (C,), aggregated as evaluation does."""
        return aggregate_tracks(window_probs, np.zeros(len(window_probs), dtype=np.int64), self.windowing.aggregate)[0]

    def window_scores(self, source, sr: int | None = None) -> tuple[float, list[float], np.ndarray]:
        """(duration, window starts, window probabilities (W, C))."""
        duration, windows = self._windows(source, sr)
        starts, scores = [], []
        for batch_starts, inputs in read_ahead(self._batches(windows)):
            starts += batch_starts
            scores.append(self._score(inputs))
        return duration, starts, window_probabilities(np.concatenate(scores), self.multi_label)

    def short_audio(self, name: str, duration: float) -> str | None:
        """The warning for audio far shorter than a window (see SHORT_SECONDS), None otherwise."""
        clip = self.windowing.clip_seconds
        if duration >= max(SHORT_SECONDS, SHORT_FRACTION * clip):
            return None
        return (
            f"{name}: {duration:.4f} s of audio, far shorter than the model's {clip:g} s window (looped to "
            "fill it): its labels say little"
        )

    def selected(self, track: np.ndarray, top_k: int | None = None, threshold: float | None = None) -> list[int]:
        """Label indices to report for track scores (C,), best first (see `predict`)."""
        order = [int(i) for i in np.argsort(-track, kind="stable")]
        if self.multi_label and threshold is not None:
            order = [i for i in order if track[i] >= threshold]
        elif self.multi_label and self.tag_thresholds is not None:
            order = [i for i in order if track[i] >= self.tag_thresholds[i]]
        elif top_k is None:
            top_k = DEFAULT_TOP_K
        return order if top_k is None else order[:top_k]

    def predict(
        self,
        source,
        sr: int | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        per_window: bool = False,
    ) -> dict:
        """Scores for a file path or an array (mono (T,) or (T, channels), with `sr`).

        Which labels come back: genres (single-label): the `top_k` best (5 when None). Tagging:
        every tag scoring at or above `threshold` when given (one value for all tags), else at or
        above its own tuned threshold (`config.tag_thresholds`, tuned on the validation split at
        the end of the run); `top_k`, when given, then keeps only the best k of those. A tagging
        model saved without tuned thresholds and called without `threshold` gives the top k
        (5 when None). Labels are ordered by score; a tagging result may be empty. Audio far shorter
        than a window is warned about, and its result holds the warning."""
        duration, starts, probs = self.window_scores(source, sr)
        track = self.track_scores(probs)  # (C,)
        order = self.selected(track, top_k, threshold)
        file = str(source) if isinstance(source, (str, Path)) else None
        result = {"file": file, "duration": round(float(duration), 3)}
        if warning := self.short_audio(file or "the array", duration):
            logger.warning(warning)
            result["warning"] = warning
        result["labels"] = [{"label": self.label_names[i], "score": round(float(track[i]), 5)} for i in order]
        if per_window:
            result["windows"] = [
                {"start": round(s, 3), "scores": {n: round(float(p), 5) for n, p in zip(self.label_names, row)}}
                for s, row in zip(starts, probs)
            ]
        return result

    def predict_many(
        self,
        inputs: str | Path | Iterable[str | Path],
        top_k: int | None = None,
        threshold: float | None = None,
        per_window: bool = False,
    ) -> Iterator[dict]:
        """`predict`'s result for each audio file of `inputs` (a file, a folder searched recursively,
        or a list of them), in order, as they are scored. A file that cannot be read gives
        {"file", "error"} instead of raising, so one bad file does not stop the rest; inputs that
        hold no audio file at all raise a ValueError."""
        for path in audio_files([inputs] if isinstance(inputs, (str, Path)) else inputs):
            try:
                yield self.predict(path, top_k=top_k, threshold=threshold, per_window=per_window)
            except (AudioReadError, FileNotFoundError) as err:
                yield {"file": str(path), "error": str(err)}


def predict_genre(
    model: Predictor | str | Path, path: str | Path, genre_names: list[str] | None = None
) -> tuple[str, float]:
    """The original project's API: the most likely genre of a file and its confidence."""
    predictor = model if isinstance(model, Predictor) else Predictor.from_pretrained(model)
    result = predictor.predict(path, top_k=1)
    best = result["labels"][0]
    if genre_names is not None:
        index = predictor.label_names.index(best["label"])
        return genre_names[index], best["score"]
    return best["label"], best["score"]
