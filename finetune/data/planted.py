"""A generated dataset with a planted artist effect, to measure what splits that share artists overstate.

Four classes x six artists x three tracks of 2 s at 16 kHz, written as `<class>/<artist>/<artist>-<n>.wav`
so the folder loader reads each artist sub-folder as a group. The class is in the rhythm only (note
rate, in overlapping ranges); each artist has a timbre signature of its own (register, harmonic
weights, a noise band), drawn independently of its class. A model can score by recognising the
artists it trained on: with artists on both sides of a split that shortcut pays, with artist-disjoint
splits only the rhythm does. Generated once per folder; a marker file records what was generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from finetune.data import folder

if TYPE_CHECKING:  # only annotations name it
    from datasets import DatasetDict

SAMPLE_RATE = 16_000
SECONDS = 2.0
CLASSES = ("class0", "class1", "class2", "class3")
ARTISTS_PER_CLASS = 6
TRACKS_PER_ARTIST = 3
NOTE_RATES = {"class0": (1.5, 3.0), "class1": (2.5, 4.0), "class2": (3.5, 5.0), "class3": (4.5, 6.0)}  # notes/s
DATA_SEED = 2024
GENERATOR_VERSION = 1


def signature(rng: np.random.Generator) -> dict:
    """An artist's timbre: fundamental register (Hz), weights of 8 harmonics, a noise band (Hz)."""
    return {
        "pitch": float(rng.uniform(110, 440)),
        "harmonics": rng.dirichlet(np.full(8, 0.5)).tolist(),
        "band": float(rng.uniform(1500, 6000)),
    }


def make_track(timbre: dict, rates: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(T,) float32: notes of the artist's timbre at a note rate from the class's range, over the
    artist's noise band."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    rate = rng.uniform(*rates)
    since_onset = (t + rng.uniform(0, 1 / rate)) % (1 / rate)  # seconds since the last note
    pitch = timbre["pitch"] * 2 ** (rng.integers(0, 5) / 12)
    tone = sum(
        w * np.sin(2 * np.pi * k * pitch * t)
        for k, w in enumerate(timbre["harmonics"], start=1)
        if k * pitch < SAMPLE_RATE / 2
    )
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t))) * _band(len(t), timbre["band"]), len(t))
    y = tone * np.exp(-since_onset / 0.08) + 0.3 * noise / (np.abs(noise).max() + 1e-9)
    return (0.8 * y / np.abs(y).max()).astype(np.float32)


def _band(length: int, centre: float) -> np.ndarray:
    """A smooth band-pass gain over the rfft bins of `length` samples, one octave wide around `centre`."""
    freqs = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    return np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / centre) / 0.5) ** 2)


def generate(root: str | Path) -> Path:
    """Write the dataset under `root` unless its marker says it is already there."""
    root = Path(root)
    marker = root / "finetune_planted.json"
    spec = {
        "version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "artists_per_class": ARTISTS_PER_CLASS,
        "tracks_per_artist": TRACKS_PER_ARTIST,
        "seconds": SECONDS,
        "sample_rate": SAMPLE_RATE,
        "seed": DATA_SEED,
    }
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    rng = np.random.default_rng(DATA_SEED)
    for c, name in enumerate(CLASSES):
        for a in range(ARTISTS_PER_CLASS):
            artist = f"artist{c * ARTISTS_PER_CLASS + a:02d}"
            timbre = signature(rng)
            (root / name / artist).mkdir(parents=True, exist_ok=True)
            for n in range(TRACKS_PER_ARTIST):
                sf.write(
                    root / name / artist / f"{artist}-{n}.wav",
                    make_track(timbre, NOTE_RATES[name], rng),
                    SAMPLE_RATE,
                    subtype="PCM_16",
                )
    marker.write_text(json.dumps(spec, indent=2))
    return root


def build(root: str | Path, group_by: str = "artist", seed: int = 0) -> DatasetDict:
    """Generate (once) and load through the folder loader (`group`: the artist; group_by="none":
    each track its own), its splits carved by artist (`finetune.data.common.complete_splits`).
    Recipes load it as `data.name=folder data.root=<root>` after `generate(root)`."""
    return folder.build(generate(root), group_by=group_by, seed=seed)
