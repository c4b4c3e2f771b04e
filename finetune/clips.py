"""Tracks as torch Datasets: random training crops and whole-track evaluation windows.

Both decode only the window they need (`read_window` seeks), at the model's sample rate. A file
that fails to read is skipped and reported, never a crash mid-epoch.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from datasets import Dataset as HFDataset
from tqdm.auto import tqdm

from finetune.data.audio import AudioReadError, audio_duration, read_window

logger = logging.getLogger("finetune.data")


def task_of(split: HFDataset) -> tuple[list[str], bool]:
    """(label names, multi_label) of a split built by `finetune.data.load_dataset`."""
    if "labels" in split.features:
        return list(split.features["labels"].feature.names), True
    return list(split.features["label"].names), False


def track_table(split: HFDataset) -> tuple[list[str], np.ndarray]:
    """Audio paths and targets: (N,) int labels, or (N, C) float32 multi-hot for tagging."""
    label_names, multi_label = task_of(split)
    paths = [audio["path"] for audio in split["audio"]]  # Audio(decode=False) rows
    if not multi_label:
        return paths, np.asarray(split["label"], dtype=np.int64)
    targets = np.zeros((len(split), len(label_names)), dtype=np.float32)  # (N, C)
    for row, tags in enumerate(split["labels"]):
        targets[row, tags] = 1.0
    return paths, targets


def fit_length(y: np.ndarray, length: int) -> np.ndarray:
    """Loop a short clip (no silent zero padding, which shifts group-norm statistics) or cut."""
    if len(y) == 0:
        return np.zeros(length, dtype=np.float32)
    if len(y) < length:
        y = np.tile(y, math.ceil(length / len(y)))
    return y[:length]


def window_starts(duration: float, clip_seconds: float, hop_seconds: float) -> list[float]:
    """Start times covering [0, duration) with `clip_seconds` windows; the last ends at the end."""
    last = max(0.0, duration - clip_seconds)
    count = max(1, math.ceil(last / hop_seconds - 1e-9) + 1)
    return [min(i * hop_seconds, last) for i in range(count)]


class TrainCrops(torch.utils.data.Dataset):
    """One random `clip_seconds` crop per track per epoch.

    The crop (and augmentation) randomness is a function of (seed, epoch, track) only, so a run
    resumed from a checkpoint draws the same crops as an uninterrupted one. The epoch lives in
    shared memory so persistent DataLoader workers see `set_epoch` too.
    """

    def __init__(self, paths, targets, sample_rate: int, clip_seconds: float, seed: int = 0,
                 augment=None):
        self.paths, self.targets, self.seed = paths, targets, seed
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.augment = augment  # callable (y, rng) -> y, or None
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._durations: dict[int, float] = {}
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer's DataLoader at the start of every epoch."""
        self._epoch[0] = int(epoch)

    def _read(self, index: int, rng: np.random.Generator) -> np.ndarray:
        if index not in self._durations:
            self._durations[index] = audio_duration(self.paths[index])
        slack = max(0.0, self._durations[index] - self.clip_seconds)
        start = float(rng.uniform(0.0, slack)) if slack > 0 else 0.0
        y = read_window(self.paths[index], self.sample_rate, start, self.clip_seconds)
        return fit_length(y, self.clip_samples)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(self._epoch[0]), index])
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                y = self._read(current, rng)  # (T,)
                break
            except AudioReadError as err:
                if current not in self._reported:
                    self._reported.add(current)
                    logger.warning("skipping unreadable training file: %s", err)
        else:
            raise RuntimeError("no training file could be read")
        if self.augment is not None:
            y = fit_length(self.augment(y, rng), self.clip_samples)
        return {"input_values": y.astype(np.float32), "labels": self.targets[current],
                "track_index": current}


class EvalWindows(torch.utils.data.Dataset):
    """Every track cut into `clip_seconds` windows (last one aligned to the end); unreadable
    tracks are left out and listed in `skipped`."""

    def __init__(self, paths, targets, sample_rate: int, clip_seconds: float,
                 hop_seconds: float | None = None, description: str = "indexing windows"):
        self.paths, self.targets, self.sample_rate = paths, targets, sample_rate
        self.clip_seconds = clip_seconds
        self.clip_samples = int(round(clip_seconds * sample_rate))
        hop = hop_seconds or clip_seconds
        self.skipped: list[str] = []
        windows = []
        for track, path in enumerate(tqdm(paths, desc=description, leave=False, disable=len(paths) < 200)):
            try:
                duration = audio_duration(path)
            except AudioReadError as err:
                self.skipped.append(str(err))
                continue
            windows += [(track, start) for start in window_starts(duration, clip_seconds, hop)]
        if self.skipped:
            logger.warning("left %d unreadable file(s) out of evaluation, e.g. %s",
                           len(self.skipped), self.skipped[0])
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        track, start = self.windows[index]
        try:
            y = read_window(self.paths[track], self.sample_rate, start, self.clip_seconds)
        except AudioReadError as err:  # the header read but the body did not: score silence
            logger.warning("unreadable window in evaluation, scored as silence: %s", err)
            y = np.zeros(0, dtype=np.float32)
        return {"input_values": fit_length(y, self.clip_samples).astype(np.float32),
                "labels": self.targets[track], "track_index": track}
