"""The torch log-mel front end against librosa, and against Won et al.'s stored front end."""

import librosa
import numpy as np
import pytest
import torch

from finetune.features import LogMel


def _clip(sample_rate: int, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize(
    "options",
    [
        dict(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96),
        dict(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, htk=True, norm=None),
        dict(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=128, f_min=20.0, f_max=8000.0),
    ],
)
def test_logmel_matches_librosa_power_to_db(options):
    y = _clip(options["sample_rate"])
    out = LogMel(**options)(torch.from_numpy(np.stack([y, 0.5 * y])))  # (2, n_mels, frames)
    for row, scale in zip(out.numpy(), (1.0, 0.5)):
        power = librosa.feature.melspectrogram(
            y=scale * y.astype(np.float64),
            sr=options["sample_rate"],
            n_fft=options["n_fft"],
            hop_length=options["hop_length"],
            n_mels=options["n_mels"],
            fmin=options.get("f_min", 0.0),
            fmax=options.get("f_max"),
            htk=options.get("htk", False),
            norm=options.get("norm", "slaney"),
            pad_mode="reflect",
            power=2.0,
        )
        expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
        assert row.shape == expected.shape
        assert np.abs(row - expected).max() < 5e-4


def test_logmel_floors_silence_at_minus_100_db():
    out = LogMel()(torch.zeros(1, 16000))
    assert out.shape == (1, 96, 16000 // 256 + 1)
    assert torch.all(out == -100.0)


def test_logmel_reproduces_won_et_al_front_end(realdata):
    path = realdata / "pretrained/sota-music-tagging-models/mtat/musicnn/best_model.pth"
    state = torch.load(path, weights_only=True, map_location="cpu")
    logmel = LogMel(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, htk=True, norm=None)
    assert torch.equal(logmel.window, state["spec.spectrogram.window"])
    assert torch.allclose(logmel.fb, state["spec.mel_scale.fb"], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_logmel_runs_on_gpu():
    logmel = LogMel()
    y = torch.from_numpy(_clip(16000))[None]
    on_gpu = logmel.cuda()(y.cuda()).cpu()
    assert torch.allclose(on_gpu, logmel.cpu()(y), atol=1e-3)
