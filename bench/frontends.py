"""Front ends: audio-seconds/s of each spectrogram front end of `finetune.features.FRONTENDS` (torch,
CPU, no gradient) vs librosa computing the same representation of the same batch (float32 in).

Batch of 8 clips x 5 s at 16 kHz, the baselines' defaults (n_fft 512, hop 256, 96 HTK mels, 20 MFCCs,
84 CQT bins from C1); the two arms alternate, one warm-up round left out, median of the rounds.
librosa has no learnable filterbank: that case compares with librosa's log-mel. numpy's BLAS gets as
many threads as torch (`--threads`): left at its default, its threads spin after librosa's matmuls
and stall torch's (4-10x slower torch arms on 2 cores, *measured*). No target: the ratio is
informational.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from baselines.common import SpectrogramConfig
from bench.timing import Result, alternate, median, once
from finetune.features import FRONTENDS, PCEN_INPUT_SCALE, build_frontend

RATE = 16000


@dataclass(frozen=True)
class Size:
    batch: int
    clip_seconds: float
    rounds: int


SIZES = {False: Size(batch=8, clip_seconds=5.0, rounds=15), True: Size(batch=2, clip_seconds=1.0, rounds=1)}


def librosa_references(config: SpectrogramConfig) -> dict:
    """Front end name -> librosa's computation of its representation of a batch (B, T)."""
    mel = dict(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        htk=config.mel_htk,
        norm=config.mel_norm,
        pad_mode="reflect",
    )

    def log_mel(y):
        return librosa.power_to_db(librosa.feature.melspectrogram(y=y, **mel), top_db=None)

    return {
        "mel": log_mel,
        "stft": lambda y: librosa.power_to_db(
            np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length, pad_mode="reflect")) ** 2,
            top_db=None,
        ),
        "cqt": lambda y: librosa.amplitude_to_db(
            np.abs(
                librosa.cqt(
                    y,
                    sr=config.sample_rate,
                    hop_length=config.hop_length,
                    fmin=librosa.note_to_hz("C1"),
                    n_bins=config.cqt_bins,
                    bins_per_octave=config.bins_per_octave,
                )
            ),
            top_db=None,
        ),
        "mfcc": lambda y: librosa.feature.mfcc(S=log_mel(y), n_mfcc=config.n_mfcc),
        "pcen": lambda y: librosa.pcen(
            librosa.feature.melspectrogram(y=y, **mel) * PCEN_INPUT_SCALE,
            sr=config.sample_rate,
            hop_length=config.hop_length,
        ),
        "learnable": log_mel,
    }


def run(quick: bool) -> list[Result]:
    """One case per front end, on the same generated batch (harmonic tones in noise)."""
    size = SIZES[quick]
    rng = np.random.default_rng(0)
    t = np.arange(int(size.clip_seconds * RATE)) / RATE
    audio = np.stack(
        [0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.05 * rng.standard_normal(t.size) for i in range(size.batch)]
    ).astype(np.float32)  # (B, T)
    references = librosa_references(SpectrogramConfig())
    with threadpool_limits(limits=torch.get_num_threads()):
        return [measure(name, torch.from_numpy(audio), references[name], size) for name in FRONTENDS]


def measure(name: str, waveform: torch.Tensor, reference, size: Size) -> Result:
    """One front end's case: its torch module and librosa's `reference` on the same batch, alternating."""
    frontend = build_frontend(SpectrogramConfig(frontend=name)).eval()
    audio = waveform.numpy()

    def torch_arm():
        with torch.no_grad():
            frontend(waveform)

    times = alternate(
        {"toolkit": once(torch_arm), "bare": once(lambda: reference(audio))}, rounds=size.rounds, warmup_rounds=1
    )
    seconds = size.batch * size.clip_seconds
    return Result(
        "frontends",
        f"{name}, {size.batch} x {size.clip_seconds:g} s at 16 kHz",
        seconds / median(times["toolkit"]),
        seconds / median(times["bare"]),
        "audio-s/s",
        target=None,
        higher_is_better=True,
        note="vs librosa's log-mel" if name == "learnable" else "",
    )
