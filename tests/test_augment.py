"""Waveform augmentations, mixup and SpecAugment."""

import numpy as np
import pytest
import torch

from finetune.augment import SpecAugment, augment_waveform, mixup

SR = 16000


def _tone(seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(SR * seconds)) / SR)).astype(np.float32)


def test_augment_waveform_defaults_and_zero_probability_are_identity():
    y = _tone()
    rng = np.random.default_rng(0)
    assert np.array_equal(augment_waveform(y, SR, rng), y)
    everything = dict(gain_db=6.0, noise_snr_db=10.0, time_stretch=0.2, pitch_shift=2.0)
    assert np.array_equal(augment_waveform(y, SR, rng, probability=0.0, **everything), y)


def test_gain_stays_in_range_and_is_seeded():
    y = _tone()
    for seed in range(20):
        out = augment_waveform(y, SR, np.random.default_rng(seed), gain_db=6.0)
        gain_db = 20 * np.log10(np.abs(out).max() / np.abs(y).max())
        assert -6.0 - 1e-4 <= gain_db <= 6.0 + 1e-4
    first = augment_waveform(y, SR, np.random.default_rng(3), gain_db=6.0, noise_snr_db=20.0)
    again = augment_waveform(y, SR, np.random.default_rng(3), gain_db=6.0, noise_snr_db=20.0)
    assert np.array_equal(first, again)


def test_noise_has_the_requested_snr():
    y = _tone(3.0)
    out = augment_waveform(y, SR, np.random.default_rng(0), noise_snr_db=10.0)
    noise = (out - y).astype(np.float64)
    snr = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.2)


@pytest.mark.slow
def test_time_stretch_changes_length_and_pitch_shift_keeps_it():
    y = _tone()
    stretched = augment_waveform(y, SR, np.random.default_rng(1), time_stretch=0.3)
    assert stretched.dtype == np.float32
    assert 0.7 * len(y) - 512 <= len(stretched) <= len(y) / 0.7 + 512
    assert len(stretched) != len(y)
    shifted = augment_waveform(y, SR, np.random.default_rng(1), pitch_shift=2.0)
    assert shifted.shape == y.shape and shifted.dtype == np.float32
    assert not np.allclose(shifted, y)


def test_mixup_single_label_makes_soft_one_hot_targets():
    x = torch.randn(6, 100)
    mixed, targets = mixup(x, torch.tensor([0, 1, 2, 0, 1, 2]), 0.4, np.random.default_rng(0), 3)
    assert mixed.shape == x.shape and targets.shape == (6, 3)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    # Each target mixes at most two classes, and its larger share is at least one half.
    assert torch.all((targets > 0).sum(dim=1) <= 2)
    assert torch.all(targets.max(dim=1).values >= 0.5 - 1e-6)
    with pytest.raises(ValueError, match="num_labels"):
        mixup(x, torch.tensor([0, 1, 2, 0, 1, 2]), 0.4, np.random.default_rng(0))


def test_mixup_multi_label_mixes_inputs_and_targets_alike():
    x = torch.arange(4.0)[:, None].repeat(1, 5)  # row i holds the value i
    targets = torch.eye(4)
    mixed, soft = mixup(x, targets, 1.0, np.random.default_rng(2))
    # Row i became lam * i + (1 - lam) * j, and its target lam * e_i + (1 - lam) * e_j.
    assert torch.allclose(mixed[:, 0], soft @ torch.arange(4.0))
    assert torch.allclose(soft.sum(dim=1), torch.ones(4))
    same, unmixed = mixup(x, targets, 0.0, np.random.default_rng(2))
    assert torch.equal(same, x) and torch.equal(unmixed, targets)


def test_spec_augment_masks_only_in_training():
    spec = torch.randn(4, 1, 32, 50) + 10.0  # no natural zeros
    augment = SpecAugment(freq_mask=8, time_mask=10, num_masks=1)
    assert torch.equal(augment.eval()(spec), spec)
    torch.manual_seed(0)
    masked = augment.train()(spec)
    zeros = masked == 0
    assert zeros.any()
    for example in zeros[:, 0]:  # (F, T)
        full_rows = example.all(dim=1).sum()
        full_cols = example.all(dim=0).sum()
        assert full_rows <= 8 and full_cols <= 10
        # Every zero lies in a fully masked row or column.
        assert torch.equal(example, example.all(dim=1)[:, None] | example.all(dim=0)[None, :])
    assert torch.equal(SpecAugment(0, 0).train()(spec), spec)
