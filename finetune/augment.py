"""Training-only augmentations: waveform (numpy), batch mixup and SpecAugment (torch)."""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn


def augment_waveform(
    y: np.ndarray,
    sr: int,
    rng: np.random.Generator,
    gain_db: float = 0.0,
    noise_snr_db: float | None = None,
    time_stretch: float | None = None,
    pitch_shift: float | None = None,
    probability: float = 1.0,
) -> np.ndarray:
    """A randomly augmented copy of the mono waveform ``y`` (T,), float32.

    Each augmentation that is on is applied with chance ``probability``, in this order:
    time-stretch by a rate in ``[1 - time_stretch, 1 + time_stretch]`` (changes the length),
    pitch-shift by up to ``pitch_shift`` semitones, a gain in ``[-gain_db, +gain_db]`` dB, and
    white noise at ``noise_snr_db`` dB below the signal's power. Off by default.
    """
    y = np.asarray(y, dtype=np.float32)
    if time_stretch and rng.random() < probability:
        rate = rng.uniform(1.0 - time_stretch, 1.0 + time_stretch)
        y = librosa.effects.time_stretch(y, rate=rate)
    if pitch_shift and rng.random() < probability:
        y = librosa.effects.pitch_shift(y, sr=sr, n_steps=rng.uniform(-pitch_shift, pitch_shift))
    if gain_db and rng.random() < probability:
        y = y * np.float32(10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0))
    if noise_snr_db is not None and rng.random() < probability:
        noise_power = np.mean(np.square(y, dtype=np.float64)) / 10.0 ** (noise_snr_db / 10.0)
        y = y + rng.normal(0.0, np.sqrt(noise_power), y.shape).astype(np.float32)
    return y.astype(np.float32, copy=False)


def mixup(
    input_values: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    generator: np.random.Generator,
    num_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example of a batch with a shuffled partner by ``lam ~ Beta(alpha, alpha)``.

    ``input_values`` (B, ...); ``targets`` either (B, C) float (multi-hot or one-hot) or (B,)
    class indices, which need ``num_labels`` and come back one-hot mixed. Returns the mixed
    inputs and float targets (B, C); ``alpha <= 0`` returns the inputs unmixed.
    """
    if not targets.is_floating_point():
        if num_labels is None:
            raise ValueError("mixup of class-index targets needs num_labels")
        targets = nn.functional.one_hot(targets.long(), num_labels)
    targets = targets.float()
    if alpha <= 0:
        return input_values, targets
    lam = float(generator.beta(alpha, alpha))
    order = torch.from_numpy(generator.permutation(len(input_values))).to(input_values.device)
    mixed = lam * input_values + (1.0 - lam) * input_values[order]
    return mixed, lam * targets + (1.0 - lam) * targets[order]


class SpecAugment(nn.Module):
    """Zero ``num_masks`` random frequency bands and time spans of a (B, C, F, T) spectrogram.

    Widths are drawn uniformly in ``[0, freq_mask]`` bins and ``[0, time_mask]`` frames per example.
    Acts only in training mode; with both widths 0 it is the identity.
    """

    def __init__(self, freq_mask: int = 0, time_mask: int = 0, num_masks: int = 2):
        super().__init__()
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.num_masks = num_masks

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_masks == 0:
            return spec
        batch, _, n_freq, n_time = spec.shape
        freq = _band_mask(batch, n_freq, self.freq_mask, self.num_masks, spec.device)  # (B, F)
        time = _band_mask(batch, n_time, self.time_mask, self.num_masks, spec.device)  # (B, T)
        mask = freq[:, None, :, None] | time[:, None, None, :]  # (B, 1, F, T)
        return spec.masked_fill(mask, 0.0)


def _band_mask(batch: int, size: int, max_width: int, count: int, device) -> torch.Tensor:
    """(batch, size) bool mask: the union of ``count`` random bands of width <= max_width."""
    width = torch.randint(0, min(max_width, size) + 1, (batch, count, 1), device=device)
    start = (torch.rand(batch, count, 1, device=device) * (size - width + 1)).long()
    index = torch.arange(size, device=device)  # (size,)
    return ((index >= start) & (index < start + width)).any(dim=1)
