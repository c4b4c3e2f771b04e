"""Spectrogram front ends computed in torch inside the model (they run on the GPU, and their window,
filters and kernels are buffers saved with the checkpoint). ``FRONTENDS`` is the registry:
recipe name (``model.args.frontend``) -> module class, each (B, T) waveform -> (B, bins, frames)
with ``bins`` its output height and ``from_config(config)`` reading a ``SpectrogramConfig``.

Each against librosa's reference on a real GTZAN clip and a generated chord (tests/test_features.py;
measured differences, then what the tests allow):
- mel: power STFT (periodic Hann, centred, reflect) times a mel filterbank, in dB; within 5e-4 dB.
- stft: the power STFT in dB, optionally cut to f_min..f_max; 3.4e-4 dB on bins within 60 dB of the
  peak (test: 1e-3), float32 rounding grows below (0.06 dB at 120 dB down).
- cqt: a strided conv1d with librosa.filters.wavelet's Hann kernels scaled as librosa.cqt scales
  them, 20 log10 |C| (floor 1e-5). librosa.cqt filters octave by octave on a downsampled signal, so
  the two differ by resampling and filter sparsity: on a 5 s GTZAN jazz clip at 16 kHz (84 bins from
  C1) bins within 40 dB of the clip's peak agree to 0.67 dB at the 99th percentile and 3.5 dB at
  worst (deeper valleys differ more); on the chord, tones with valleys between them, 2.5 dB at the
  99th percentile and 11 dB at worst, where librosa's own res_type="fft" differs from its default by
  6.7 / 23 dB (test: median under 0.2 dB, 99th percentile under 3 dB). nnAudio 0.3.4 was measured against the same reference and
  dropped: CQT1992v2 1.4 / 7.9 dB, CQT2010v2 1.3 / 27 dB; it was 1.3x faster than this conv
  (0.20 s vs 0.26 s for 8 x 5 s on 2 threads), not worth a dependency that matches librosa worse.
  bench/frontends.py: this conv runs at 0.6x librosa.cqt's speed on one CPU thread, 1.2x on two.
- mfcc: the orthonormal DCT-II of the mel front end's dB (librosa.feature.mfcc(S=...)); no 80 dB
  top_db clip (librosa's mfcc(y=...) clips). 8e-5 for coefficients up to 270 (test: 1e-3).
- pcen: librosa.pcen's defaults (gain 0.98, bias 2, power 0.5, time constant 0.4 s, eps 1e-6, its
  smoother coefficient b from sr and hop, its initial state) on the mel power scaled by 2**31, as
  librosa's examples scale float audio: librosa.pcen(mel_power * 2**31, sr=sr, hop_length=hop) within
  1.6e-5 for outputs up to 5 (test: 1e-4).
- learnable: the mel front end whose filterbank is a parameter (clamped non-negative in forward),
  initialised to the mel filterbank, so at initialisation it equals mel exactly. A cheap, honest
  learnable front end; SincNet or LEAF learn more (filter shapes, compression) and are not here.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.fft
import torch
from torch import nn
from torch.nn import functional as F

AMIN = 1e-10  # power floor before the log, as librosa's power_to_db(amin=1e-10)
PCEN_INPUT_SCALE = 2.0**31  # float audio's mel power in the int32 range librosa.pcen's defaults assume


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    """``10 * log10(max(power, 1e-10))``, librosa.power_to_db(ref=1, top_db=None)."""
    return 10.0 * torch.log10(torch.clamp(power, min=AMIN))


class PowerSTFT(nn.Module):
    """(B, T) -> power STFT (B, n_fft // 2 + 1, T // hop + 1): periodic Hann, centred, reflect padding."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))  # (n_fft,)

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, n_freqs, frames)
        return stft.real.square() + stft.imag.square()


class LogMel(PowerSTFT):
    """Waveform (B, T) -> log-mel power spectrogram in dB (B, n_mels, frames).

    The filterbank is a buffer so a checkpoint carries the exact front end it was trained with (Won
    et al. store theirs: ``htk=True, norm=None`` reproduces it; librosa's default is Slaney).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 256,
        n_mels: int = 96,
        f_min: float = 0.0,
        f_max: float | None = None,
        htk: bool = False,
        norm: str | None = "slaney",
    ):
        super().__init__(n_fft, hop_length)
        self.bins = n_mels
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=htk, norm=norm)
        self.register_buffer("fb", torch.from_numpy(fb.T).float())  # (n_fft // 2 + 1, n_mels)

    @classmethod
    def from_config(cls, config) -> LogMel:
        return cls(
            config.sample_rate,
            config.n_fft,
            config.hop_length,
            config.n_mels,
            config.f_min,
            config.f_max,
            config.mel_htk,
            config.mel_norm,
        )

    def filterbank(self) -> torch.Tensor:
        return self.fb  # (n_freqs, n_mels)

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        power = self.power(waveform)  # (B, n_freqs, frames)
        return torch.matmul(power.transpose(1, 2), self.filterbank()).transpose(1, 2)  # (B, n_mels, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return power_to_db(self.mel_power(waveform))


class LearnableMel(LogMel):
    """LogMel whose filterbank ``fb`` is a parameter, initialised to the mel filterbank and clamped
    non-negative in forward (so at initialisation it is the mel front end exactly)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        fb = self.fb
        del self.fb
        self.fb = nn.Parameter(fb)

    def filterbank(self) -> torch.Tensor:
        return self.fb.clamp(min=0.0)


class LogSTFT(PowerSTFT):
    """Waveform (B, T) -> power STFT in dB (B, bins, frames), the bins from f_min to f_max (inclusive)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float | None = None,
    ):
        super().__init__(n_fft, hop_length)
        step = sample_rate / n_fft
        self.low = int(np.ceil(f_min / step))
        self.high = n_fft // 2 if f_max is None else min(n_fft // 2, int(np.floor(f_max / step)))
        self.bins = self.high - self.low + 1
        if self.bins < 1:
            raise ValueError(f"stft: no STFT bin from f_min = {f_min:g} Hz up to {self.high * step:g} Hz")

    @classmethod
    def from_config(cls, config) -> LogSTFT:
        return cls(config.sample_rate, config.n_fft, config.hop_length, config.f_min, config.f_max)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return power_to_db(self.power(waveform)[:, self.low : self.high + 1])  # (B, bins, frames)


class LogCQT(nn.Module):
    """Waveform (B, T) -> constant-Q magnitude in dB (B, bins, T // hop + 1), 20 log10 |C| floored at
    1e-5 as librosa.amplitude_to_db(|librosa.cqt|); bins from f_min (C1 when 0), centred frames with
    zero padding as librosa.cqt pads."""

    def __init__(
        self,
        sample_rate: int = 16000,
        hop_length: int = 256,
        bins: int = 84,
        bins_per_octave: int = 12,
        f_min: float = 0.0,
    ):
        super().__init__()
        self.hop_length = hop_length
        self.bins = bins
        freqs = librosa.cqt_frequencies(bins, fmin=f_min or librosa.note_to_hz("C1"), bins_per_octave=bins_per_octave)
        basis, lengths = librosa.filters.wavelet(freqs=freqs, sr=sample_rate, norm=1, pad_fft=True)
        # librosa.cqt's response is lengths * <y, basis>, then divided by sqrt(lengths) (scale=True).
        basis = basis * np.sqrt(lengths)[:, None]  # (bins, n_fft), each kernel centred
        centre, half = basis.shape[1] // 2, int(np.ceil(lengths.max() / 2)) + 1
        basis = basis[:, max(0, centre - half) : centre + half]  # the zeros around the longest kernel cut
        kernels = np.concatenate([basis.real, basis.imag])[:, None]  # (2 * bins, 1, L)
        self.register_buffer("kernels", torch.from_numpy(kernels).float())

    @classmethod
    def from_config(cls, config) -> LogCQT:
        return cls(config.sample_rate, config.hop_length, config.cqt_bins, config.bins_per_octave, config.f_min)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        half = self.kernels.shape[-1] // 2
        padded = F.pad(waveform.unsqueeze(1), (half, half))  # (B, 1, T + L)
        parts = F.conv1d(padded, self.kernels, stride=self.hop_length)  # (B, 2 * bins, frames)
        power = parts[:, : self.bins].square() + parts[:, self.bins :].square()  # (B, bins, frames)
        return power_to_db(power)


class MFCC(nn.Module):
    """Waveform (B, T) -> MFCCs (B, n_mfcc, frames): the orthonormal DCT-II of the log-mel in dB."""

    def __init__(self, logmel: LogMel, n_mfcc: int = 20):
        super().__init__()
        if not 1 <= n_mfcc <= logmel.bins:
            raise ValueError(f"n_mfcc: {n_mfcc} coefficients of {logmel.bins} mel bands; keep 1 to {logmel.bins}")
        self.logmel = logmel
        self.bins = n_mfcc
        dct = scipy.fft.dct(np.eye(logmel.bins), type=2, norm="ortho", axis=0)[:n_mfcc]  # (n_mfcc, n_mels)
        self.register_buffer("dct", torch.from_numpy(dct).float())

    @classmethod
    def from_config(cls, config) -> MFCC:
        return cls(LogMel.from_config(config), config.n_mfcc)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, self.logmel(waveform))  # (B, n_mfcc, frames)


class PCEN(nn.Module):
    """Waveform (B, T) -> per-channel energy normalised mel power (B, n_mels, frames), librosa.pcen's
    defaults on the mel power times 2**31 (see the module docstring)."""

    gain, bias, power, eps = 0.98, 2.0, 0.5, 1e-6

    def __init__(self, logmel: LogMel, sample_rate: int, hop_length: int, time_constant: float = 0.4):
        super().__init__()
        self.logmel = logmel
        self.bins = logmel.bins
        t_frames = time_constant * sample_rate / hop_length
        self.b = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)  # librosa.pcen's smoother

    @classmethod
    def from_config(cls, config) -> PCEN:
        return cls(LogMel.from_config(config), config.sample_rate, config.hop_length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.logmel.mel_power(waveform) * PCEN_INPUT_SCALE  # (B, F, T)
        smooth = torch.ones_like(mel[..., 0])  # (B, F): librosa's lfilter_zi state, a unit past
        smoothed = []
        for frame in mel.unbind(dim=-1):
            smooth = self.b * frame + (1 - self.b) * smooth
            smoothed.append(smooth)
        smooth = torch.stack(smoothed, dim=-1)  # (B, F, T)
        agc = torch.exp(-self.gain * (np.log(self.eps) + torch.log1p(smooth / self.eps)))
        return self.bias**self.power * torch.expm1(self.power * torch.log1p(mel * agc / self.bias))


# Recipe name (model.args.frontend) -> front end; "mel" is the default and Won et al.'s.
FRONTENDS = {
    "mel": LogMel,
    "stft": LogSTFT,
    "cqt": LogCQT,
    "mfcc": MFCC,
    "pcen": PCEN,
    "learnable": LearnableMel,
}


def build_frontend(config) -> nn.Module:
    """The front end ``config.frontend`` names, from the config's settings; ValueError naming the
    choices for an unknown name."""
    if config.frontend not in FRONTENDS:
        raise ValueError(f"frontend: {config.frontend!r} is not one of {', '.join(FRONTENDS)}")
    return FRONTENDS[config.frontend].from_config(config)
