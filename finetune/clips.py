"""Tracks as torch Datasets: random training crops and whole-track evaluation windows.

Both decode only the window they need (`read_window` seeks), at the model's sample rate; training
crops come from an `AudioCache` instead when the split is small enough (`training_cache`). A file
that fails to read is skipped and reported, never a crash mid-epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset as HFDataset
from datasets.distributed import split_dataset_by_node
from filelock import FileLock

from finetune.console import progress
from finetune.data.audio import AudioReadError, audio_duration, os_cause, read_window
from finetune.data.common import task_of  # also re-exported: the runners read the task here

logger = logging.getLogger("finetune.data")


def track_table(split: HFDataset) -> tuple[list[str], np.ndarray]:
    """Audio paths and targets: (N,) int labels, or (N, C) float32 multi-hot for tagging."""
    label_names, multi_label = task_of(split)
    target = "labels" if multi_label else "label"
    if isinstance(split, HFDataset):
        paths, column = [audio["path"] for audio in split["audio"]], split[target]  # Audio(decode=False)
    else:  # a streamed split (data.streaming=true): one pass over its metadata rows, no audio read
        rows = [(row["audio"]["path"], row[target]) for row in split]
        paths, column = [path for path, _ in rows], [value for _, value in rows]
    if not multi_label:
        return paths, np.asarray(column, dtype=np.int64)
    targets = np.zeros((len(paths), len(label_names)), dtype=np.float32)  # (N, C)
    for row, tags in enumerate(column):
        targets[row, tags] = 1.0
    return paths, targets


def fit_length(y: np.ndarray, length: int) -> np.ndarray:
    """Loop a short clip (no silent zero padding, which shifts group-norm statistics) or cut.
    An empty clip is an error: a window of silence must never stand in for missing audio."""
    if len(y) == 0:
        raise ValueError("cannot fit an empty clip to a window: no audio was read")
    if len(y) < length:
        y = np.tile(y, math.ceil(length / len(y)))
    return y[:length]


def window_starts(duration: float, clip_seconds: float, hop_seconds: float) -> list[float]:
    """Start times covering [0, duration) with `clip_seconds` windows; the last ends at the end."""
    last = max(0.0, duration - clip_seconds)
    count = max(1, math.ceil(last / hop_seconds - 1e-9) + 1)
    return [min(i * hop_seconds, last) for i in range(count)]


@dataclass(frozen=True)
class Windowing:
    """How every path scores a track: windows of `clip_seconds` every `hop_seconds` (None: end to
    end), the last ending at the track's end, a track shorter than a window looped to its length;
    window probabilities combined per track by `aggregate` (mean | max,
    `finetune.evaluation.aggregate_tracks`). Training evaluation, `evaluate` and its studies, the
    probe and `predict` all take their windows from here; a trained model keeps it in its config.
    `max_seconds` (None: the whole track) scores only a track's first seconds: full tracks of minutes
    (MTG-Jamendo) cost what the windows over them cost."""

    clip_seconds: float
    hop_seconds: float | None = None
    aggregate: str = "mean"
    max_seconds: float | None = None

    @property
    def hop(self) -> float:
        return self.hop_seconds or self.clip_seconds

    def starts(self, duration: float) -> list[float]:
        scored = duration if self.max_seconds is None else min(duration, self.max_seconds)
        return window_starts(scored, self.clip_seconds, self.hop)

    def samples(self, sample_rate: int) -> int:
        return int(round(self.clip_seconds * sample_rate))

    @classmethod
    def of_recipe(cls, recipe) -> Windowing:
        return cls(
            recipe.data.clip_seconds, recipe.data.eval_hop_seconds, recipe.eval.aggregate, recipe.eval.max_seconds
        )

    @classmethod
    def of_config(cls, config, default_clip_seconds: float) -> Windowing:
        """A saved model's windowing (`clip_seconds`, `hop_seconds`, `aggregate`, `max_seconds` in its config)."""
        clip = getattr(config, "clip_seconds", None) or default_clip_seconds
        return cls(
            float(clip),
            getattr(config, "hop_seconds", None),
            getattr(config, "aggregate", None) or "mean",
            getattr(config, "max_seconds", None),
        )

    def save_to(self, config) -> None:
        config.clip_seconds, config.hop_seconds, config.aggregate = self.clip_seconds, self.hop, self.aggregate
        config.max_seconds = self.max_seconds


@dataclass(frozen=True)
class CachedTrack:
    """A cached track's int16 samples: in its entry file from byte `offset` on, or (`samples`) in
    memory when the entry could not be written."""

    length: int  # samples
    file: Path | None = None
    offset: int = 0
    samples: np.ndarray | None = None  # (T,) int16

    def read(self, first: int, count: int) -> np.ndarray:
        """(<= count,) int16 samples from `first`: one read of just those bytes (mapping the entry
        for every crop cost more than the crop: 0.3 ms of the 0.8 ms a 5 s crop took)."""
        count = max(0, min(count, self.length - first))
        if self.samples is not None:
            return self.samples[first : first + count]
        return np.fromfile(self.file, dtype=np.int16, count=count, offset=self.offset + 2 * first)


class AudioCache:
    """Whole tracks decoded once at one sample rate, stored as int16 .npy files: the fastest
    training data path (no decode, no resample; a crop reads only its bytes), at the cost of disk
    (MTAT at 24 kHz: 33.6 GiB). Entries are keyed by path, size, mtime and rate."""

    def __init__(self, folder: str | Path, sample_rate: int):
        self.folder, self.sample_rate = Path(folder), sample_rate
        self.unwritable: str | None = None  # why an entry could not be written, once one could not
        self._tracks: dict[Path, CachedTrack] = {}  # entry -> where its samples are, once located

    def track(self, path: str) -> CachedTrack:
        """The cached track of `path` (decoded on first use, see `load`); its entry's layout is
        located once per process (entries never change: a new key is a new file)."""
        entry = self.entry(path)
        found = self._tracks.get(entry)
        if found is not None and entry.is_file():  # an entry removed since (a cleared cache): load again
            return found
        track = self.load(path)
        if not isinstance(track, np.memmap):  # the entry could not be written: the decoded track itself
            return CachedTrack(len(track), samples=track)
        found = self._tracks[entry] = CachedTrack(len(track), entry, track.offset)
        return found

    def entry(self, path: str) -> Path:
        try:
            stat = os.stat(path)
        except OSError as err:
            raise AudioReadError(path, f"cannot open: {os_cause(err)}") from err
        key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}"
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def load(self, path: str) -> np.ndarray:
        """(T,) int16 memory map of the whole track, decoded on first use, once among the processes
        sharing the folder (the runs and workers of a comparison): the first decodes holding the
        entry's lock, the others wait for it and read its entry. When the entry cannot be written
        (disk full, read-only folder) the decoded track is returned from memory and `unwritable`
        says why, once, in a warning."""
        entry = self.entry(path)
        if entry.is_file():
            return np.load(entry, mmap_mode="r")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(entry.with_suffix(".lock")))
            lock.acquire()
        except OSError as err:
            self.cannot_write(err)
            return self.decode(path)
        try:
            return np.load(entry, mmap_mode="r") if entry.is_file() else self.store(entry, self.decode(path))
        finally:
            with contextlib.suppress(OSError):  # the entry is written (or cannot be): no later reader waits
                Path(lock.lock_file).unlink()
            lock.release()

    def decode(self, path: str) -> np.ndarray:
        return (np.clip(read_window(path, self.sample_rate), -1.0, 1.0 - 2**-15) * 32768).astype(np.int16)

    def store(self, entry: Path, track: np.ndarray) -> np.ndarray:
        """The entry written whole then renamed, read back memory-mapped; `track` itself when it
        cannot be written."""
        partial = entry.with_suffix(f".{os.getpid()}.tmp")
        try:
            with open(partial, "wb") as f:
                np.save(f, track)
            os.replace(partial, entry)
        except OSError as err:
            with contextlib.suppress(OSError):
                partial.unlink()
            self.cannot_write(err)
            return track
        return np.load(entry, mmap_mode="r")

    def cannot_write(self, err: OSError) -> None:
        """Remember (and say, once) why entries cannot be written."""
        if self.unwritable is None:
            self.unwritable = os_cause(err)
            logger.warning(
                "audio cache %s cannot be written (%s): reading windows from the audio files instead",
                self.folder,
                self.unwritable,
            )


def training_cache(
    setting: bool | None, seconds: float | None, folder: str | Path, sample_rate: int, max_gib: float
) -> AudioCache | None:
    """The training split's `AudioCache`, or None for windowed reads. `setting` true / false forces
    it; None (auto) turns it on when the split's audio at `sample_rate` (`seconds` in all; None
    when unknown, as when streaming) fits in `max_gib` and in half the free disk: GTZAN yes,
    MTAT and FMA no. Crops then cost a read of their bytes instead of decode + resample."""
    if setting is not None:
        return AudioCache(folder, sample_rate) if setting else None
    if seconds is None:
        logger.info("data.audio_cache: off (training durations unknown while streaming)")
        return None
    size = seconds * sample_rate * 2  # int16 mono
    existing = next(p for p in (Path(folder), *Path(folder).absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    fits = size <= max_gib * 2**30 and 2 * size <= free
    logger.info(
        "data.audio_cache: %s (training audio at %d Hz: %.2f GiB; limit "
        "data.audio_cache_max_gib=%g, %.1f GiB free in %s)",
        "on" if fits else "off",
        sample_rate,
        size / 2**30,
        max_gib,
        free / 2**30,
        existing,
    )
    return AudioCache(folder, sample_rate) if fits else None


class CropReader:
    """Reads a random `clip_seconds` crop of a file at `sample_rate`, augmented when asked;
    through an `AudioCache` when given one."""

    def __init__(self, sample_rate: int, clip_seconds: float, augment=None, cache: AudioCache | None = None):
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.augment = augment  # callable (y, rng=...) -> y, or None
        self.cache = cache
        self._durations: dict[str, float] = {}  # path -> seconds, from its header

    def know_durations(self, paths, durations) -> None:
        """Durations the dataset's index already read from the headers (`audio_duration`, as the
        reader would): DataLoader workers forked after this never read a header again."""
        self._durations.update((path, float(seconds)) for path, seconds in zip(paths, durations) if seconds is not None)

    def _start(self, duration: float, rng: np.random.Generator) -> float:
        slack = max(0.0, duration - self.clip_seconds)
        return float(rng.uniform(0.0, slack)) if slack > 0 else 0.0

    def _read(self, path: str, rng: np.random.Generator) -> np.ndarray:
        if self.cache is not None and self.cache.unwritable is None:
            track = self.cache.track(path)
            first = int(round(self._start(track.length / self.sample_rate, rng) * self.sample_rate))
            y = track.read(first, self.clip_samples).astype(np.float32)  # (T,)
            y *= 1 / 32768
            return y
        if path not in self._durations:
            self._durations[path] = audio_duration(path)
        start = self._start(self._durations[path], rng)
        return read_window(path, self.sample_rate, start, self.clip_seconds)

    def crop(self, path: str, rng: np.random.Generator) -> np.ndarray:
        """(T,) float32; raises AudioReadError for an unreadable file."""
        y = fit_length(self._read(path, rng), self.clip_samples)
        if self.augment is not None:
            y = fit_length(self.augment(y, rng=rng), self.clip_samples)
        return y.astype(np.float32, copy=False)


class SharedEpoch:
    """The epoch in shared memory, so persistent DataLoader workers see `set_epoch` too."""

    def __init__(self):
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer's DataLoader at the start of every epoch."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])


def crops_per_track(durations, clip_seconds: float, setting: int | None = None) -> np.ndarray:
    """(N,) random crops drawn from each training track per epoch: `setting` for every track, or
    (null) the track's duration over the crop length, at least one, so that an epoch covers the
    training audio about once whatever the number of tracks (a 30 s track, 3 s crops: 10)."""
    if setting is not None:
        return np.full(len(durations), int(setting), dtype=np.int64)
    return np.maximum(1, np.round(np.asarray(durations, dtype=np.float64) / clip_seconds)).astype(np.int64)


class TrainCrops(SharedEpoch, torch.utils.data.Dataset):
    """`crops[t]` random crops of each track t per epoch (one each by default).

    The crop (and augmentation) randomness is a function of (seed, epoch, item) only, so a run
    resumed from a checkpoint draws the same crops as an uninterrupted one. Unreadable files are
    skipped (the next track stands in) and reported once.
    """

    def __init__(
        self, paths, targets, reader: CropReader, seed: int = 0, crops: np.ndarray | None = None, durations=None
    ):
        super().__init__()
        self.paths, self.targets, self.reader, self.seed = paths, targets, reader, seed
        if durations is not None:  # the index's (N,) seconds of `paths`
            reader.know_durations(paths, durations)
        counts = np.ones(len(paths), dtype=np.int64) if crops is None else np.asarray(crops)
        self.tracks = np.repeat(np.arange(len(paths)), counts)  # (items,) the track of each item
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        for attempt in range(len(self.paths)):
            current = (int(self.tracks[index]) + attempt) % len(self.paths)
            try:
                y = self.reader.crop(self.paths[current], rng)  # (T,)
                return {"input_values": y, "labels": self.targets[current], "track_index": current}
            except AudioReadError as err:
                if current not in self._reported:
                    self._reported.add(current)
                    logger.warning("skipping unreadable training file: %s", err)
        raise RuntimeError("no training file could be read")


class StreamCrops(SharedEpoch, torch.utils.data.IterableDataset):
    """Random crops from a streamed split (`datasets.IterableDataset`), for corpora too large to
    index in memory (`data.streaming=true`). Shuffled with a buffer, reseeded every epoch;
    `crops_per_row` crops of each row in turn (durations are unknown before the files are read).

    Several processes (torchrun / accelerate, `world_size` > 1): process `rank` streams its own
    shards of the split (`datasets.distributed.split_dataset_by_node`), so the processes read
    disjoint files whose union is the split, each decoding its own; its DataLoader workers divide
    those shards again. A process then streams its shards pass after pass (the Trainer's
    `max_steps` ends training): processes holding a few rows more or less never end an epoch at
    different steps, which would desynchronise their gradient exchange.

    The files of a streamed split were not checked when it was built: a file that is missing or
    unreadable is skipped (its row, label included, is dropped, never replaced), warned about once,
    and counted in `skipped` (path -> cause); each pass over the stream ends with a summary on the
    `finetune.data` logger. A pass in which no file could be read is an error, not an endless loop.
    """

    def __init__(
        self,
        stream,
        num_labels: int,
        multi_label: bool,
        reader: CropReader,
        seed: int = 0,
        buffer_size: int = 1000,
        crops_per_row: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.stream, self.reader, self.seed, self.buffer_size = stream, reader, seed, buffer_size
        self.crops_per_row = crops_per_row
        self.num_labels, self.multi_label = num_labels, multi_label
        self.rank, self.world_size = rank, world_size
        self.skipped: dict[str, str] = {}  # in this process (each DataLoader worker has its own)

    def _target(self, row: dict):
        if not self.multi_label:
            return np.int64(row["label"])
        target = np.zeros(self.num_labels, dtype=np.float32)  # (C,)
        target[row["labels"]] = 1.0
        return target

    def _summary(self, rows: int, skipped: dict[str, str], epoch: int) -> None:
        if skipped:
            shown = "; ".join(f"{path} ({cause})" for path, cause in list(skipped.items())[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            logger.warning(
                "streamed training data: skipped %d missing or unreadable file(s) of %d row(s) read in epoch %d: %s%s",
                len(skipped),
                rows,
                epoch,
                shown,
                more,
            )

    def rank_stream(self):
        """The rows this process streams: its shards of the split (all of it in one process)."""
        if self.world_size == 1:
            return self.stream
        return split_dataset_by_node(self.stream, rank=self.rank, world_size=self.world_size)

    def one_pass(self, stream, epoch: int):
        """The crops of one shuffled pass over `stream`; returns the number of rows read."""
        stream = stream.shuffle(seed=self.seed, buffer_size=self.buffer_size)
        stream.set_epoch(epoch)
        rows, yielded, skipped = 0, 0, {}
        try:
            for position, row in enumerate(stream):
                rows += 1
                path = row["audio"]["path"]
                rng = np.random.default_rng([self.seed, epoch, self.rank, position])
                try:
                    crops = [self.reader.crop(path, rng) for _ in range(self.crops_per_row)]  # (T,) each
                except AudioReadError as err:
                    skipped[path] = err.cause
                    if path not in self.skipped:
                        self.skipped[path] = err.cause
                        logger.warning("skipping unreadable training file: %s", err)
                    continue
                yielded += 1
                for y in crops:
                    yield {"input_values": y, "labels": self._target(row), "track_index": -1}
        finally:  # also when the Trainer stops mid-pass at max_steps
            self._summary(rows, skipped, epoch)
        worker = torch.utils.data.get_worker_info()
        if rows and not yielded and (worker is None or worker.num_workers == 1):
            raise RuntimeError(
                f"no training file could be read: all {rows} streamed file(s) were "
                f"missing or unreadable, e.g. {next(iter(skipped))}"
            )
        return rows

    def __iter__(self):
        stream = self.rank_stream()
        if self.world_size == 1:
            yield from self.one_pass(stream, self.epoch)
            return
        for epoch in itertools.count(self.epoch):
            if not (yield from self.one_pass(stream, epoch)):
                return  # this DataLoader worker holds no shard of this process's rows


def unreadable_window(track: int, clip_samples: int) -> dict:
    """The item of a window that could not be read: a silent placeholder of the batch's shape, its
    track marked -1 - track so that evaluation drops every window of that track."""
    return {"input_values": np.zeros(clip_samples, dtype=np.float32), "track_index": -1 - track}


def unreadable_tracks(track_index: np.ndarray) -> np.ndarray:
    """The tracks marked unreadable (by `unreadable_window`) in a window track index (W,)."""
    return np.unique(-1 - track_index[track_index < 0])


class EvalWindows(torch.utils.data.Dataset):
    """Every track cut into the windows of `windowing`. Tracks whose header is unreadable are left
    out and listed in `skipped`. A window that fails to read comes back with `track_index`
    -1 - track: evaluation drops every window of that track (`finetune.evaluation.readable_windows`)
    and `skipped_files` names it."""

    def __init__(self, paths, targets, sample_rate: int, windowing: Windowing, description: str = "indexing windows"):
        self.paths, self.targets, self.sample_rate = paths, targets, sample_rate
        self.clip_seconds = windowing.clip_seconds
        self.clip_samples = windowing.samples(sample_rate)
        self.skipped: list[str] = []
        windows = []
        for track, path in enumerate(progress(paths, description, unit="tracks")):
            try:
                duration = audio_duration(path)
            except AudioReadError as err:
                self.skipped.append(str(err))
                continue
            windows += [(track, start) for start in windowing.starts(duration)]
        if self.skipped:
            logger.warning("left %d unreadable file(s) out of evaluation, e.g. %s", len(self.skipped), self.skipped[0])
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        track, start = self.windows[index]
        item = {"labels": self.targets[track], "track_index": track}
        try:
            y = read_window(self.paths[track], self.sample_rate, start, self.clip_seconds)  # (T,)
            item["input_values"] = fit_length(y, self.clip_samples).astype(np.float32)
        except AudioReadError as err:  # the header read but the body did not: mark the track
            logger.warning("leaving a track out of evaluation: %s", err)
            item.update(unreadable_window(track, self.clip_samples))
        return item

    def skipped_files(self, track_index: np.ndarray) -> list[str]:
        """What was left out of an evaluation whose windows came back with `track_index` (W,):
        the unreadable headers, then the tracks with a window marked unreadable."""
        return self.skipped + [
            str(AudioReadError(self.paths[t], "a window could not be read, see the warnings"))
            for t in unreadable_tracks(track_index)
        ]


class AudioCollator:
    """List of {input_values (T,), labels, track_index} -> the model's batch via its extractor."""

    def __init__(self, feature_extractor, sample_rate: int):
        from transformers import Wav2Vec2FeatureExtractor  # loaded by then: the models need it

        self.feature_extractor = feature_extractor
        self.sample_rate = sample_rate
        # The baselines' extractor (their front end is in the model) neither normalises nor masks:
        # equal-length clips come out as they went in, stacked, so they are stacked here directly
        # (the extractor's per-clip conversions cost 3-4 % of a training crop's read).
        self.passes_clips_through = (
            type(feature_extractor) is Wav2Vec2FeatureExtractor
            and not feature_extractor.do_normalize
            and not feature_extractor.return_attention_mask
            and feature_extractor.sampling_rate == sample_rate
        )

    def __call__(self, items: list[dict]) -> dict:
        clips = [item["input_values"] for item in items]
        if self.passes_clips_through and len({len(clip) for clip in clips}) == 1:
            batch = {"input_values": torch.from_numpy(np.stack(clips).astype(np.float32, copy=False))}  # (B, T)
        else:
            batch = dict(self.feature_extractor(clips, sampling_rate=self.sample_rate, return_tensors="pt"))
        batch["labels"] = torch.as_tensor(np.stack([item["labels"] for item in items]))
        batch["track_index"] = torch.as_tensor([item["track_index"] for item in items])
        return batch
