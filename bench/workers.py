"""Workers (issue 31): a small `compare --vary` (2 learning rates x 4 folds of the demo) run by one
worker and by two (`--jobs 2`) on this machine, in one run: runs per minute of each, and what the
shared decoded-audio cache saves.

Each arm is a fresh `python -m finetune compare --recipe demo --vary ...` into its own folder with
its own cold audio cache ($FINETUNE_CACHE per arm; the generated dataset is shared), so each decodes
the dataset once; one worker has torch's default threads (what `compare --vary` does today), two
workers one thread each on 2 cores (`--jobs` divides them). DataLoader workers are off in both
(data.num_workers=0): the case measures the runs' processes. The shared cache (`AudioCache`, one
per machine, each file decoded once under its entry's lock): the files the one-worker comparison
decoded into it, and a bare decode of them (read_window, this process); a cache per run would decode
each file again in every run that trains on it ((folds - 2) of the folds). Target on 2 cores: >= 1.6x.
`--quick` runs the demo on a folder of 12 generated 2 s tones (3 classes; generating the demo's dataset
takes seconds), 1 s crops and windows, batches of 2, each value once on the folder's own split (no
--folds: the workers claim runs the same way, and each command costs a few seconds of imports).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.media import GTZAN_WAV, copies, write_tone
from bench.timing import Result, seconds
from finetune.clips import AudioCache
from finetune.data import synthetic
from finetune.data.audio import read_window

TARGET = 1.6
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Size:
    folds: int | None  # None: each value once, on the dataset's own split
    steps: int
    batch: int
    tones: bool  # a folder of generated tones (`tones`) instead of the demo's dataset, 1 s crops and windows


SIZES = {False: Size(folds=4, steps=8, batch=8, tones=False), True: Size(folds=None, steps=1, batch=2, tones=True)}
TONE_CLASSES, TONES_PER_CLASS, TONE_SECONDS = 3, 4, 2.0


def tones(folder: Path) -> Path:
    """A class-per-subfolder dataset (`data.name=folder`): TONES_PER_CLASS copies of one generated tone
    in each of TONE_CLASSES class folders."""
    template = write_tone(folder / f"tone.{GTZAN_WAV.suffix}", TONE_SECONDS, GTZAN_WAV)
    root = folder / "tones"
    copies(
        template,
        (
            root / f"class{c}" / f"tone{i}.{GTZAN_WAV.suffix}"
            for c in range(TONE_CLASSES)
            for i in range(TONES_PER_CLASS)
        ),
    )
    return root


def dataset(folder: Path, size: Size) -> tuple[Path, list[str]]:
    """The dataset's root and the settings that read it."""
    if size.tones:
        return tones(folder), ["data.name=folder", "data.clip_seconds=1", "eval.max_seconds=1"]
    return synthetic.generate(folder / "synthetic"), []


def comparison(root: Path, settings: list[str], out: Path, cache: Path, jobs: int, size: Size) -> float:
    """Wall-clock seconds of one `compare --vary` by `jobs` workers, its audio cache in `cache`."""
    folds = ["--folds", str(size.folds)] if size.folds else []
    argv = [
        sys.executable,
        "-m",
        "finetune",
        "compare",
        "--recipe",
        "demo",
        "--vary",
        "train.lr=0.001,0.002",
        *folds,
        "--out",
        str(out),
        "--jobs",
        str(jobs),
        f"data.root={root}",
        *settings,
        f"train.max_steps={size.steps}",
        f"train.batch_size={size.batch}",
        "data.num_workers=0",
        "eval.durations=null",
        "data.audio_cache=true",
    ]
    environment = {**os.environ, "FINETUNE_CACHE": str(cache)}
    return seconds(lambda: subprocess.run(argv, cwd=PROJECT_ROOT, env=environment, check=True, capture_output=True))


def decoding(root: Path, cache: Path) -> tuple[int, float]:
    """The files of `root` a comparison decoded into `cache` (its audio/<rate>/ folder), and the seconds a
    bare decode of them takes."""
    folder = next((cache / "audio").iterdir())
    store = AudioCache(folder, int(folder.name))
    decoded = [path for path in map(str, sorted(root.rglob("*.wav"))) if store.entry(path).is_file()]
    return len(decoded), seconds(lambda: [read_window(path, store.sample_rate) for path in decoded])


def run(quick: bool) -> list[Result]:
    size = SIZES[quick]
    runs = 2 * (size.folds or 1)
    trained_share = (size.folds - 2) / size.folds if size.folds else 1.0  # of the decoded files, in each run
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        folder = Path(tmp)
        root, settings = dataset(folder, size)
        one = comparison(root, settings, folder / "one", folder / "cache-one", 1, size)
        two = comparison(root, settings, folder / "two", folder / "cache-two", 2, size)
        files, decode = decoding(root, folder / "cache-one")
    per_run_caches = decode * (runs * trained_share - 1)
    shape = f"{size.folds} folds" if size.folds else "the dataset's split"
    return [
        Result(
            "workers",
            f"compare --vary, 2 values x {shape} of the demo ({runs} runs, {size.steps} steps each), 2 workers vs 1",
            60 * runs / two,
            60 * runs / one,
            "runs/min",
            TARGET,
            higher_is_better=True,
            note=f"{os.cpu_count()} cores; 1 worker {one:.0f} s, 2 workers {two:.0f} s; shared audio cache: "
            f"{files} files decoded once per comparison ({decode:.2f} s of bare decode), a cache per run "
            f"would decode {per_run_caches:.2f} s more",
        )
    ]
