"""A generated, music-like genre dataset for the offline demo and the tests.

Six classes that differ in timbre, rhythm and pitch content, written as WAV files in GTZAN's
folder layout (`genres/<class>/<class>.000NN.wav`) so they go through the real GTZAN loader.
Made hard enough for the demo's studies to show something:
- imbalanced classes, 60 tracks down to 15 (the rare-class study);
- one harder pair: harp and pluck share a timbre and differ only in register and note rate, whose
  ranges overlap (the confusion); they are the two rarest classes, harp the rarer;
- each instrument plays in phrases between rests that hold only the noise floor, starting with a
  rest, so a 1 s excerpt often holds nothing to classify and a 3 s one little (the duration study).
Generated once per folder, under a temporary name renamed into place at the end (a failure, a
full disk, leaves no half-written dataset); a marker file, written last, records what was generated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from finetune.atomic import staged_folder, write_atomically, writing
from finetune.console import progress
from finetune.data import gtzan
from finetune.data.common import DatasetCard, check_options

SAMPLE_RATE = 22_050  # GTZAN's rate, so the demo resamples like real data
SECONDS = 8.0
TRACKS_PER_CLASS = {"pulse": 60, "drone": 45, "buzz": 35, "bells": 25, "pluck": 20, "harp": 15}
GENERATOR_VERSION = 2
# GTZAN's published lists name GTZAN's files: the generated classes only split at random
OPTION_CHOICES = {"split_scheme": ("random",)}  # checked by `build`, and by recipes before a run
CARD = DatasetCard("synthetic", "generated audio")  # how model cards name it
DATA_SEED = 1234  # the data is the same for every recipe seed; the split follows the recipe seed
FADE = 0.05  # seconds of fade in and out of each phrase


def _harmonics(freq: np.ndarray, t: np.ndarray, count: int, rolloff: float) -> np.ndarray:
    """Sum of `count` harmonics of a (possibly time-varying) frequency (T,) with 1/k^rolloff."""
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE  # (T,)
    out = np.zeros_like(t)
    for k in range(1, count + 1):
        below_nyquist = (k * freq) < SAMPLE_RATE / 2
        out += below_nyquist * np.sin(k * phase) / k**rolloff
    return out


def _notes(rng, t, rate_range, dur_range, make_note) -> np.ndarray:
    """Overlay notes at random onsets; `make_note(rng, local_t)` returns a note (T_note,)."""
    out = np.zeros_like(t)
    onset = rng.uniform(0, 0.3)
    while onset < SECONDS:
        start = int(onset * SAMPLE_RATE)
        length = min(len(t) - start, int(rng.uniform(*dur_range) * SAMPLE_RATE))
        out[start : start + length] += make_note(rng, t[:length])
        onset += 1.0 / rng.uniform(*rate_range)
    return out


def drone(rng, t):
    """Sustained low chord, slow swell, no onsets."""
    root = rng.uniform(70, 160)
    chord = sum(_harmonics(np.full_like(t, root * r), t, 4, 2.0) for r in (1.0, 1.5, rng.choice([1.25, 1.2])))
    return chord * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t))


def pulse(rng, t):
    """Kick drum on the beat and hi-hat noise on the off-beat, no pitched content."""
    beat = 60.0 / rng.uniform(90, 150)
    local = t % beat  # seconds since the last beat
    kick = np.sin(2 * np.pi * np.cumsum(50 + 70 * np.exp(-local / 0.03)) / SAMPLE_RATE) * np.exp(-local / 0.12)
    off = (t + beat / 2) % beat
    hat = np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-off / 0.02) * 0.3
    return kick + hat


def _plucked(rng, t, base_range, rate_range) -> np.ndarray:
    """Plucked-string notes from a pentatonic scale on a base pitch drawn from `base_range` (Hz)."""
    base = rng.uniform(*base_range)
    scale = base * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14]) / 12)
    return _notes(
        rng,
        t,
        rate_range,
        (0.3, 0.8),
        lambda r, lt: _harmonics(np.full_like(lt, r.choice(scale)), lt, 8, 1.0) * np.exp(-lt / r.uniform(0.08, 0.25)),
    )


def pluck(rng, t):
    """Plucked-string notes, mid register, 2.5-5 notes a second."""
    return _plucked(rng, t, (200, 300), (2.5, 5.0))


def harp(rng, t):
    """Pluck's timbre and scale, a little lower and slower: both ranges overlap pluck's."""
    return _plucked(rng, t, (170, 260), (1.8, 4.0))


def buzz(rng, t):
    """Bright sawtooth lead with vibrato, long notes, high register."""
    base = rng.uniform(500, 800)
    scale = base * 2 ** (np.array([0, 3, 5, 7, 10, 12]) / 12)

    def note(r, lt):
        freq = r.choice(scale) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * lt))
        return _harmonics(freq, lt, 20, 1.0) * np.minimum(1.0, lt / 0.03)

    return _notes(rng, t, (1.2, 2.5), (0.4, 0.9), note)


def bells(rng, t):
    """Sparse inharmonic bell strikes with long decays."""
    ratios = np.array([1.0, 2.76, 5.40, 8.93])

    def note(r, lt):
        base = r.uniform(500, 1200)
        return sum(
            np.sin(2 * np.pi * base * k * lt) / (i + 1) * np.exp(-lt / (1.2 / (i + 1))) for i, k in enumerate(ratios)
        )

    return _notes(rng, t, (0.7, 1.4), (1.0, 2.0), note)


GENERATORS = {"bells": bells, "buzz": buzz, "drone": drone, "harp": harp, "pluck": pluck, "pulse": pulse}
CLASSES = sorted(GENERATORS)


def phrases(rng, t) -> np.ndarray:
    """Gain (T,): phrases of 1-2 s between rests of 2-4 s, after an opening rest of 0.5-3 s."""
    times, gains = [0.0], [0.0]
    start = rng.uniform(0.5, 3.0)
    while start < SECONDS:
        end = start + rng.uniform(1.0, 2.0)
        times += [start, start + FADE, end, end + FADE]
        gains += [0.0, 1.0, 1.0, 0.0]
        start = end + FADE + rng.uniform(2.0, 4.0)
    return np.interp(t, times, gains)


def make_track(name: str, rng: np.random.Generator) -> np.ndarray:
    """One track of class `name`: (T,) float32, phrases over a noise floor, at a random level.
    The floor is set against the peak, not the class's loudness, so a rest says nothing of the class."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE  # (T,)
    y = GENERATORS[name](rng, t) * phrases(rng, t)
    y = y / (np.abs(y).max() + 1e-9)
    y = y + rng.standard_normal(len(y)) * 10 ** (-rng.uniform(30, 45) / 20)
    return (y / np.abs(y).max() * rng.uniform(0.3, 0.9)).astype(np.float32)


def write_tracks(folder: Path) -> None:
    """Every track, as `folder/<class>/<class>.000NN.wav`."""
    rng = np.random.default_rng(DATA_SEED)
    jobs = [(name, i) for name in CLASSES for i in range(TRACKS_PER_CLASS[name])]
    for name, i in progress(jobs, "generating synthetic dataset", unit="tracks"):
        (folder / name).mkdir(exist_ok=True)
        sf.write(folder / name / f"{name}.{i:05d}.wav", make_track(name, rng), SAMPLE_RATE, subtype="PCM_16")


def generate(root: str | Path) -> Path:
    """Write the dataset under `root` unless the marker says it is already there. `root/genres` is
    replaced whole (an older generation's files go with it); a failure (a full disk: one OSError
    naming the folder) leaves what was there before."""
    root = Path(root)
    marker = root / "finetune_synthetic.json"
    spec = {
        "version": GENERATOR_VERSION,
        "tracks_per_class": {name: TRACKS_PER_CLASS[name] for name in CLASSES},
        "seconds": SECONDS,
        "sample_rate": SAMPLE_RATE,
        "seed": DATA_SEED,
    }
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    genres = root / "genres"
    with staged_folder(genres) as staging, writing(genres, "the generated dataset"):
        write_tracks(staging)
    write_atomically(marker, json.dumps(spec, indent=2))
    return root


multi_label_task = gtzan.multi_label_task  # loaded through the GTZAN loader


def build(
    root: str | Path, split_scheme: str = "random", seed: int = 0, streaming: bool = False, group_by: str = "artist"
):
    """Generate (once) and load through the GTZAN loader with a seeded stratified split (its tracks
    name no artist: each is its own group, whatever `group_by`)."""
    check_options(OPTION_CHOICES, split_scheme=split_scheme)  # before generating
    return gtzan.build(
        generate(root), split_scheme=split_scheme, seed=seed, genres=CLASSES, streaming=streaming, group_by=group_by
    )
