"""Streamed data path under several processes: aggregate crops/s of 2 processes, each streaming
its own shards of the split (`StreamCrops` with its rank, as under torchrun), vs 1 process
streaming all of it, on FMA-like MP3s (44.1 kHz stereo, decoded and resampled to 16 kHz).

Each process builds its stream, waits at a barrier, then times one pass; the aggregate rate is
the crops of both over the slower one's time. Before issue 15 rank 0 read and decoded everything
and dispatched batches, so 2 processes read at 1 process's rate (1.0x). Target: >= 1.6x on 2 cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.media import FMA_MP3, track_files
from bench.models import SAMPLE_RATE
from bench.timing import Result, median, process_context
from finetune.clips import CropReader, StreamCrops
from finetune.data.common import iterable_split, split_features

TARGET = 1.6
LABELS = ["a", "b", "c", "d"]
SIZES = {False: (128, 30.0, 5.0, 3), True: (8, 3.0, 1.0, 1)}  # tracks, track seconds, crop seconds, rounds


def one_pass(rank: int, world: int, paths: list[str], clip_seconds: float, barrier, seconds) -> None:
    """In one process: stream this rank's shards of the split and time one pass of crops."""
    torch.set_num_threads(1)
    rows = [{"id": str(i), "audio": path, "label": i % len(LABELS), "duration": None} for i, path in enumerate(paths)]
    crops = StreamCrops(
        iterable_split(rows, split_features(LABELS, False)),
        len(LABELS),
        False,
        CropReader(SAMPLE_RATE, clip_seconds),
        rank=rank,
        world_size=world,
    )
    stream = crops.rank_stream()
    barrier.wait()
    start = time.perf_counter()
    count = sum(1 for _ in crops.one_pass(stream, epoch=0))
    seconds[rank] = (count, time.perf_counter() - start)


def aggregate_rate(world: int, paths: list[str], clip_seconds: float, quick: bool) -> float:
    """Crops per second of `world` processes together, each streaming its own shards."""
    context = process_context(quick)
    barrier, seconds = context.Barrier(world), context.Manager().dict()
    processes = [
        context.Process(target=one_pass, args=(rank, world, paths, clip_seconds, barrier, seconds))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed (exit code {process.exitcode})")
    counts, times = zip(*seconds.values())
    return sum(counts) / max(times)


def run(quick: bool) -> list[Result]:
    tracks, track_seconds, clip_seconds, rounds = SIZES[quick]
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        paths = [str(p) for p in track_files(Path(tmp), FMA_MP3, tracks, track_seconds)]
        rates = {1: [], 2: []}
        for _ in range(rounds):  # alternating, so the machine's noise falls on both
            for world in rates:
                rates[world].append(aggregate_rate(world, paths, clip_seconds, quick))
    return [
        Result(
            "ranks",
            f"2 processes streaming their own shards vs 1 streaming all, {FMA_MP3.label}, "
            f"{clip_seconds:g} s crops at {SAMPLE_RATE} Hz",
            median(rates[2]),
            median(rates[1]),
            "crops/s",
            TARGET,
            higher_is_better=True,
        )
    ]
