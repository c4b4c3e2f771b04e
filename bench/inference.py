"""Inference: audio-seconds/s of `Predictor.predict` on a long file (read in windows, features,
model, per-file average) vs the bare model forward on the same windows already in memory.

The file is FMA-like (MP3, 44.1 kHz stereo); the model is the baseline CNN at 16 kHz, batch 16.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.media import FMA_MP3, write_tone
from bench.models import baseline_cnn
from bench.timing import Result, alternate, median, once
from finetune.clips import Windowing, fit_length, window_starts
from finetune.data.audio import audio_duration, read_window
from finetune.predict import Predictor

TARGET = 0.95  # raised by issue 31 (was 0.9)
BATCH = 16


@dataclass(frozen=True)
class Size:
    file_seconds: float
    clip_seconds: float
    rounds: int


SIZES = {
    False: Size(file_seconds=600.0, clip_seconds=5.0, rounds=3),
    True: Size(file_seconds=20.0, clip_seconds=2.0, rounds=1),
}


def windows_in_memory(path: Path, rate: int, clip_seconds: float) -> torch.Tensor:
    """The windows `predict` reads, decoded beforehand: (W, T)."""
    samples = int(round(clip_seconds * rate))
    starts = window_starts(audio_duration(path), clip_seconds, clip_seconds)
    return torch.from_numpy(np.stack([fit_length(read_window(path, rate, s, clip_seconds), samples) for s in starts]))


def run(quick: bool) -> list[Result]:
    size = SIZES[quick]
    _, bundle = baseline_cnn()
    predictor = Predictor(bundle, Windowing(size.clip_seconds), batch_size=BATCH, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tone(Path(tmp) / "long.mp3", size.file_seconds, FMA_MP3)
        windows = windows_in_memory(path, bundle.sample_rate, size.clip_seconds)

        @torch.no_grad()
        def bare() -> None:
            for batch in windows.split(BATCH):
                predictor.model(input_values=batch)

        samples = alternate(
            {"toolkit": once(lambda: predictor.predict(path)), "bare": once(bare)}, size.rounds, warmup_rounds=1
        )
    toolkit, bare = (size.file_seconds / median(samples[arm]) for arm in ("toolkit", "bare"))
    return [
        Result(
            "inference",
            f"baseline CNN, {size.file_seconds:g} s {FMA_MP3.label}, {len(windows)} windows of {size.clip_seconds:g} s",
            toolkit,
            bare,
            "audio-s/s",
            TARGET,
            higher_is_better=True,
        )
    ]
