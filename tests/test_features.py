"""The torch front ends against librosa's references (a generated signal and a real GTZAN clip), and
the mel front end against Won et al.'s stored one."""

import librosa
import numpy as np
import pytest
import soundfile
import soxr
import torch

from baselines.common import SpectrogramConfig
from finetune.features import (
    FRONTENDS,
    MFCC,
    PCEN,
    PCEN_INPUT_SCALE,
    LearnableMel,
    LogCQT,
    LogMel,
    LogSTFT,
    build_frontend,
)

SR, HOP = 16000, 256


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


def _chord(seconds: float = 3.0) -> np.ndarray:
    """Three harmonic notes (A2, C#4, E5, five partials each) over faint noise."""
    t = np.arange(int(SR * seconds)) / SR
    notes = sum(0.1 / k * np.sin(2 * np.pi * f * k * t) for f in (110.0, 277.2, 659.3) for k in range(1, 6))
    return (notes + 0.001 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module", params=["generated", "gtzan"])
def music(request) -> np.ndarray:
    """5 s at 16 kHz: the generated chord, or the start of a real GTZAN jazz clip (skipped without it)."""
    if request.param == "generated":
        return _chord(5.0)
    y, rate = soundfile.read(request.getfixturevalue("realdata") / "gtzan/genres/jazz/jazz.00000.wav", dtype="float32")
    return soxr.resample(y, rate, SR)[: 5 * SR].astype(np.float32)


def _run(frontend, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return frontend(torch.from_numpy(y)[None])[0].numpy()  # (bins, frames)


def _mel_power(y: np.ndarray) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=SR, n_fft=512, hop_length=HOP, n_mels=96, htk=True, norm=None, pad_mode="reflect"
    )


@pytest.mark.parametrize("band", [{}, dict(f_min=100.0, f_max=4000.0)])
def test_stft_matches_librosa_power_to_db(music, band):
    """Within 1e-3 dB on bins within 60 dB of the peak (float32 powers below that round further:
    0.1 dB at 120 dB down)."""
    frontend = LogSTFT(SR, 512, HOP, **band)
    power = np.abs(librosa.stft(music.astype(np.float64), n_fft=512, hop_length=HOP, pad_mode="reflect")) ** 2
    expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)[frontend.low : frontend.high + 1]
    out = _run(frontend, music)
    assert out.shape == expected.shape == (frontend.bins, 5 * SR // HOP + 1)
    loud = expected > expected.max() - 60
    assert np.abs(out - expected)[loud].max() < 1e-3


def test_cqt_matches_librosa_on_bins_with_energy(music):
    """librosa.cqt filters octave by octave on a downsampled signal, this conv at the full rate: on
    bins within 40 dB of the peak the median difference stays under 0.2 dB and the 99th percentile
    under 3 dB (librosa's own res_type="fft" differs from its default by 6.7 dB there on the chord)."""
    expected = librosa.amplitude_to_db(
        np.abs(librosa.cqt(music.astype(np.float64), sr=SR, hop_length=HOP, fmin=librosa.note_to_hz("C1"), n_bins=84)),
        ref=1.0,
        amin=1e-5,
        top_db=None,
    )
    out = _run(LogCQT(SR, HOP, bins=84), music)
    assert out.shape == expected.shape
    diff = np.abs(out - expected)[expected > expected.max() - 40]
    assert np.median(diff) < 0.2 and np.percentile(diff, 99) < 3.0


def test_mfcc_matches_librosa(music):
    """Within 1e-3 of librosa.feature.mfcc on the same log-mel (coefficients reach hundreds)."""
    expected = librosa.feature.mfcc(
        S=librosa.power_to_db(_mel_power(music), ref=1.0, amin=1e-10, top_db=None), n_mfcc=20
    )
    out = _run(MFCC(LogMel(SR, 512, HOP, 96, htk=True, norm=None), 20), music)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-3


def test_pcen_matches_librosa_on_the_same_mel_power(music):
    """Within 1e-4 of librosa.pcen(mel_power * 2**31, sr, hop) with its defaults (outputs reach ~5)."""
    expected = librosa.pcen(_mel_power(music) * PCEN_INPUT_SCALE, sr=SR, hop_length=HOP)
    out = _run(PCEN(LogMel(SR, 512, HOP, 96, htk=True, norm=None), SR, HOP), music)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-4


def test_learnable_equals_mel_at_init_and_learns_its_filterbank():
    y = torch.from_numpy(np.stack([_chord(1.0), 0.5 * _chord(1.0)]))
    mel, learnable = LogMel(SR, 512, HOP, 64), LearnableMel(SR, 512, HOP, 64)
    assert isinstance(learnable.fb, torch.nn.Parameter) and "fb" not in dict(learnable.named_buffers())
    out = learnable(y)
    assert torch.equal(out, mel(y))
    out.mean().backward()
    assert learnable.fb.grad is not None and learnable.fb.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_every_front_end_reports_its_height(name):
    config = SpectrogramConfig(frontend=name, n_mels=40, n_mfcc=13, cqt_bins=60, f_min=0.0)
    frontend = build_frontend(config)
    out = frontend(torch.from_numpy(np.stack([_chord(1.0)] * 2)))
    assert out.shape == (2, frontend.bins, SR // HOP + 1)
    assert torch.isfinite(out).all()


def test_an_unknown_front_end_names_the_choices():
    with pytest.raises(ValueError, match="frontend: 'gammatone' is not one of mel, stft, cqt, mfcc, pcen, learnable"):
        build_frontend(SpectrogramConfig(frontend="gammatone"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", list(FRONTENDS))
def test_every_front_end_runs_on_gpu(name):
    frontend = build_frontend(SpectrogramConfig(frontend=name))
    y = torch.from_numpy(np.stack([_chord(2.0), 0.5 * _chord(2.0)]))
    on_cpu = frontend(y)
    on_gpu = frontend.cuda()(y.cuda()).cpu()
    assert torch.allclose(on_gpu, on_cpu, atol=1e-2, rtol=1e-3)
