"""The generated demo dataset: imbalanced classes, one harder pair, rests that short excerpts fall in."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from finetune.data import synthetic


def timbre_profile(path) -> np.ndarray:
    """Mean MFCCs 1-19 (19,) of a file over the frames where its instrument plays (within 20 dB of
    its loudest frame), so the rests' noise floor does not count."""
    y, sr = sf.read(path, dtype="float32")  # (T,)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64))  # (64, frames)
    loudest = mel.max(axis=0)  # (frames,)
    playing = mel[:, loudest > loudest.max() - 20]  # (64, frames')
    return librosa.feature.mfcc(S=playing, n_mfcc=20)[1:].mean(axis=1)


@pytest.mark.slow
def test_class_counts_are_imbalanced_and_every_split_has_every_class(synthetic_root):
    counts = {name: len(list((synthetic_root / "genres" / name).glob("*.wav"))) for name in synthetic.CLASSES}
    assert counts == synthetic.TRACKS_PER_CLASS
    assert counts["pulse"] == 4 * counts["harp"] and sum(counts.values()) == 200
    data = synthetic.build(synthetic_root)
    for split in data.values():
        assert set(split["label"]) == set(range(len(synthetic.CLASSES)))
    assert (
        json.loads((synthetic_root / "finetune_synthetic.json").read_text())["version"] == synthetic.GENERATOR_VERSION
    )


@pytest.mark.slow
def test_harp_and_pluck_are_the_closest_pair(synthetic_root):
    profiles = np.stack(
        [
            np.mean([timbre_profile(p) for p in sorted((synthetic_root / "genres" / name).glob("*.wav"))[:8]], axis=0)
            for name in synthetic.CLASSES
        ]
    )  # (C, 19)
    distance = np.linalg.norm(profiles[:, None] - profiles[None], axis=2)  # (C, C)
    np.fill_diagonal(distance, np.inf)
    harp, pluck = synthetic.CLASSES.index("harp"), synthetic.CLASSES.index("pluck")
    assert distance[harp].argmin() == pluck and distance[pluck].argmin() == harp
    assert distance[harp, pluck] < 0.5 * np.delete(distance, [harp, pluck], axis=0).min()  # than any other pair


def test_tracks_open_with_a_rest_and_rest_between_phrases():
    rng = np.random.default_rng(0)
    t = np.arange(int(synthetic.SECONDS * synthetic.SAMPLE_RATE)) / synthetic.SAMPLE_RATE  # (T,)
    gains = np.stack([synthetic.phrases(rng, t) for _ in range(50)])  # (50, T)
    assert (gains[:, t < 0.5] == 0).all()
    playing = (gains > 0).mean(axis=1)  # (50,)
    assert 0.1 < playing.min() and playing.max() < 0.6  # a phrase at least, rests for the most part
    assert (gains.max(axis=1) == 1).all()


def test_regenerating_after_a_version_change_leaves_no_stale_tracks(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "SECONDS", 0.5)
    monkeypatch.setattr(synthetic, "TRACKS_PER_CLASS", {name: 4 for name in synthetic.CLASSES})
    synthetic.generate(tmp_path)
    monkeypatch.setattr(synthetic, "TRACKS_PER_CLASS", {name: 3 for name in synthetic.CLASSES})
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    synthetic.generate(tmp_path)
    assert sorted(p.name for p in (tmp_path / "genres" / "harp").iterdir()) == [f"harp.{i:05d}.wav" for i in range(3)]
