"""Generated inputs: audio files in the formats real datasets ship, and labelled splits of them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from datasets import DatasetDict

from finetune.data.common import Clip, assemble


@dataclass(frozen=True)
class AudioFormat:
    label: str
    suffix: str
    rate: int
    channels: int


FMA_MP3 = AudioFormat("FMA-like MP3 44.1 kHz stereo", "mp3", 44_100, 2)
MTAT_MP3 = AudioFormat("MTAT-like MP3 16 kHz mono", "mp3", 16_000, 1)
GTZAN_WAV = AudioFormat("GTZAN-like WAV 22.05 kHz mono", "wav", 22_050, 1)


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A chord under a slow tremolo, another chord per channel: (T, C) float32. No broadband noise:
    LAME encodes noise 4x slower, and decoding time does not depend on it."""
    t = np.arange(int(round(seconds * rate))) / rate  # (T,)
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)
    columns = [
        tremolo * sum(0.15 * np.sin(2 * np.pi * f * (1 + 0.25 * c) * t) for f in (220, 277, 330))
        for c in range(channels)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def write_tone(path: Path, seconds: float, fmt: AudioFormat) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, fmt.rate, fmt.channels), fmt.rate, format=fmt.suffix.upper())
    return path


def copies(template: Path, paths: Iterable[Path]) -> list[Path]:
    """The template's bytes at every path: hard links (no disk space), copies where refused."""
    out = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(template, path)
        except OSError:
            shutil.copyfile(template, path)
        out.append(path)
    return out


def track_files(folder: Path, fmt: AudioFormat, count: int, seconds: float) -> list[Path]:
    """`count` distinct paths of one generated track in `fmt`."""
    template = write_tone(folder / f"template.{fmt.suffix}", seconds, fmt)
    return copies(template, (folder / f"track{i:05d}.{fmt.suffix}" for i in range(count)))


def labelled_splits(root: Path, splits: Mapping[str, Sequence[Path]], label_names: Sequence[str]) -> DatasetDict:
    """A DatasetDict like the dataset loaders build; track i of a split gets label i mod C."""
    clips = {
        name: [
            Clip(rel, rel, i % len(label_names))  # the relative path doubles as the id
            for i, rel in enumerate(p.relative_to(root).as_posix() for p in paths)
        ]
        for name, paths in splits.items()
    }
    return assemble("bench", str(root), clips, label_names, multi_label=False, allow_missing=False)
