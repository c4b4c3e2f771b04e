"""Log-mel front end computed in torch (runs on GPU, matches librosa within 5e-4 dB)."""

from __future__ import annotations

import librosa
import torch
from torch import nn

AMIN = 1e-10  # power floor before the log, as librosa's power_to_db(amin=1e-10)


class LogMel(nn.Module):
    """Waveform (B, T) -> log-mel power spectrogram in dB (B, n_mels, frames).

    Power STFT with a periodic Hann window, centred with reflect padding, times a mel filterbank,
    then ``10 * log10(max(x, 1e-10))``. The window and the filterbank are persistent buffers so a
    checkpoint carries the exact front end it was trained with (Won et al. store theirs:
    ``htk=True, norm=None`` reproduces their filterbank; librosa's default is Slaney).
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
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        fb = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=htk, norm=norm
        )
        self.register_buffer("window", torch.hann_window(n_fft))  # (n_fft,)
        self.register_buffer("fb", torch.from_numpy(fb.T).float())  # (n_fft // 2 + 1, n_mels)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, n_freqs, frames)
        power = stft.real.square() + stft.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)  # (B, n_mels, frames)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
