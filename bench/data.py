"""Data path: clips/s of the training crops (window read + resample + mono + the collator's
features) in DataLoader workers vs bare soundfile reads of the same windows with the same workers.

Both datasets draw each epoch's crop start the same way (seeded by seed, epoch, track), so they
read the same windows; files are generated once per format and linked at distinct paths. The bare
arm hands its windows over as decoded (native rate and channels): from 44.1 kHz stereo its workers
ship 5.5x the bytes of the toolkit's 16 kHz mono crops.
"""

from __future__ import annotations

import collections
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from bench.media import FMA_MP3, GTZAN_WAV, MTAT_MP3, AudioFormat, track_files
from bench.models import SAMPLE_RATE, baseline_cnn
from bench.timing import Result, alternate, median, once
from finetune.clips import AudioCache, CropReader, SharedEpoch, TrainCrops
from finetune.training import AudioCollator

TARGET = 0.8


@dataclass(frozen=True)
class Size:
    clips: int
    track_seconds: float
    clip_seconds: float
    batch: int
    workers: int
    rounds: int


SIZES = {False: Size(clips=384, track_seconds=30.0, clip_seconds=5.0, batch=16, workers=2, rounds=5),
         True: Size(clips=8, track_seconds=3.0, clip_seconds=1.0, batch=4, workers=1, rounds=1)}


class BareWindows(SharedEpoch, torch.utils.data.Dataset):
    """`sf.read(start=, stop=)` of the window TrainCrops draws for (seed, epoch, track); nothing else."""

    def __init__(self, paths: list[str], clip_seconds: float, seed: int = 0):
        super().__init__()
        self.paths, self.clip_seconds, self.seed = paths, clip_seconds, seed
        infos = [sf.info(p) for p in paths]  # known before training, like a dataset's durations
        self.rates = [info.samplerate for info in infos]
        self.durations = [info.frames / info.samplerate for info in infos]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, index])  # as TrainCrops and CropReader
        slack = max(0.0, self.durations[index] - self.clip_seconds)
        first = int(round((float(rng.uniform(0.0, slack)) if slack > 0 else 0.0) * self.rates[index]))
        count = int(round(self.clip_seconds * self.rates[index]))
        return sf.read(self.paths[index], start=first, stop=first + count, dtype="float32")[0]


def stack(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


def epoch_arm(dataset, collate, size: Size):
    """An arm for `alternate`: one timed pass over a persistent-worker loader, a new epoch each."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=size.batch, shuffle=True,
                                         num_workers=size.workers, collate_fn=collate,
                                         persistent_workers=size.workers > 0)
    epochs = itertools.count()

    def one_epoch() -> None:
        dataset.set_epoch(next(epochs))
        collections.deque(loader, maxlen=0)

    return once(one_epoch)


def measure(fmt: AudioFormat, folder: Path, size: Size, collator: AudioCollator,
            cache: AudioCache | None = None) -> Result:
    paths = [str(p) for p in track_files(folder, fmt, size.clips, size.track_seconds)]
    targets = np.arange(len(paths)) % 4
    crops = TrainCrops(paths, targets, CropReader(SAMPLE_RATE, size.clip_seconds, cache=cache), seed=0)
    if cache is not None:  # filled before timing, as after a run's first epoch
        for path in paths:
            cache.load(path)
    samples = alternate({"toolkit": epoch_arm(crops, collator, size),
                         "bare": epoch_arm(BareWindows(paths, size.clip_seconds), stack, size)},
                        size.rounds, warmup_rounds=1)
    toolkit, bare = (size.clips / median(samples[arm]) for arm in ("toolkit", "bare"))
    cached = ", data.audio_cache" if cache is not None else ""
    return Result("data", f"{fmt.label} -> {SAMPLE_RATE // 1000} kHz, {size.workers} worker(s){cached}",
                  toolkit, bare, "clips/s", TARGET, higher_is_better=True,
                  note=f"toolkit {toolkit * size.clip_seconds:,.0f} audio-s/s")


def run(quick: bool) -> list[Result]:
    size = SIZES[quick]
    _, bundle = baseline_cnn()  # its extractor: what the collator runs for every baseline
    collator = AudioCollator(bundle.feature_extractor, SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(fmt, Path(tmp) / fmt.suffix / str(fmt.rate), size, collator)
                   for fmt in (FMA_MP3, MTAT_MP3, GTZAN_WAV)]
        cache = AudioCache(Path(tmp) / "cache", SAMPLE_RATE)
        return results + [measure(GTZAN_WAV, Path(tmp) / "cached", size, collator, cache)]
