"""Occlusion saliency over the log-mel time-frequency plane, for any model that takes waveforms.

How: the excerpt's STFT (Hann window, n_fft 1024, hop 256) is cut into patches, `bands` bands of
equal width on the mel scale times segments of `segment_seconds`. For each patch the STFT bins
inside it are set to zero and the waveform is re-synthesised with `torch.istft`, then scored the
way evaluation scores a track (clip-length windows, probabilities averaged). A patch's saliency
is the drop in the target class's probability when it is removed: positive where the sound there
supports the prediction. Masking the waveform's own STFT, not a spectrogram inside the model,
explains log-mel CNNs, AST and waveform models (MERT, wav2vec2) the same way. The unmasked
re-synthesis is the reference, and only the windows that overlap a patch are scored again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch

from finetune.clips import fit_length, window_starts
from finetune.console import progress
from finetune.data.audio import read_window
from finetune.features import LogMel
from finetune.report import save_figure, subplots
from finetune.scoring import RunModel

N_FFT, HOP = 1024, 256
MELS_PER_BAND = 4  # display resolution of the log-mel panel
FIGSIZE, DPI = (10.0, 6.0), 100  # the saved PNG is 1000 x 600 pixels


@dataclass
class Saliency:
    values: np.ndarray  # (bands, segments) drop in the target probability when a patch is removed
    band_edges: np.ndarray  # (bands + 1,) Hz, equal steps on the mel scale
    segment_seconds: float
    log_mel: np.ndarray  # (bands * MELS_PER_BAND, frames) dB, the excerpt as displayed
    seconds: float
    label: str
    score: float  # target probability of the unmasked excerpt


def occlusion_saliency(
    model: RunModel, y: np.ndarray, target: int | None = None, bands: int = 16, segment_seconds: float = 0.5
) -> Saliency:
    """Saliency of waveform y (T,) at the model's rate for class `target` (default: predicted)."""
    sr, length = model.sample_rate, len(y)
    window = torch.hann_window(N_FFT)
    spec = torch.stft(
        torch.from_numpy(y).float(), N_FFT, HOP, window=window, center=True, return_complex=True
    )  # (F, frames)
    seconds = length / sr
    edges = librosa.mel_frequencies(bands + 1, fmin=0.0, fmax=sr / 2)  # (bands + 1,)
    band_of_bin = np.clip(np.searchsorted(edges, np.fft.rfftfreq(N_FFT, 1 / sr), side="right") - 1, 0, bands - 1)
    segments = max(1, math.ceil(seconds / segment_seconds - 1e-9))
    segment_of_frame = np.minimum((np.arange(spec.shape[1]) * HOP / sr // segment_seconds).astype(int), segments - 1)

    clip = int(round(model.clip_seconds * sr))
    starts = [int(round(s * sr)) for s in window_starts(seconds, model.clip_seconds, model.hop_seconds)]

    def resynthesise(masked: torch.Tensor) -> np.ndarray:
        return torch.istft(masked, N_FFT, HOP, window=window, center=True, length=length).numpy()  # (T,)

    reference = resynthesise(spec)
    base = model.probabilities([fit_length(reference[s : s + clip], clip) for s in starts])  # (W, C)
    target = int(model.track_scores(base).argmax()) if target is None else target
    change = np.zeros((bands, segments))  # mean over windows of (occluded - reference) probability
    pending: list[tuple[int, int, int, np.ndarray]] = []

    def flush() -> None:
        probs = model.probabilities([item[3] for item in pending])  # (B, C)
        for (band, segment, w, _), row in zip(pending, probs):
            change[band, segment] += (row[target] - base[w, target]) / len(starts)
        pending.clear()

    patches = [(b, s) for b in range(bands) for s in range(segments)]
    for band, segment in progress(patches, "occlusion patches", unit="patches"):
        frames = np.flatnonzero(segment_of_frame == segment)
        if frames.size == 0:  # a last segment shorter than one hop
            continue
        masked = spec.clone()
        masked[np.ix_(band_of_bin == band, frames)] = 0
        occluded = resynthesise(masked)
        first, last = frames[0] * HOP - N_FFT // 2, frames[-1] * HOP + N_FFT // 2  # samples it can touch
        for w, s in enumerate(starts):
            if s <= last and s + clip > first:
                pending.append((band, segment, w, fit_length(occluded[s : s + clip], clip)))
        if len(pending) >= model.batch_size:
            flush()
    if pending:
        flush()
    log_mel = LogMel(sr, N_FFT, HOP, bands * MELS_PER_BAND, f_max=sr / 2)(torch.from_numpy(y)[None].float())[0]
    return Saliency(
        values=-change,
        band_edges=edges,
        segment_seconds=segment_seconds,
        log_mel=log_mel.numpy(),
        seconds=seconds,
        label=model.label_names[target],
        score=float(base.mean(axis=0)[target]),
    )


def saliency_figure(saliency: Saliency, title: str = ""):
    """Log-mel spectrogram above the saliency map, on the same time and mel axes."""
    bands = len(saliency.band_edges) - 1
    fig, (ax_mel, ax_sal) = subplots(2, 1, figsize=FIGSIZE, sharex=True)
    ax_mel.imshow(saliency.log_mel, origin="lower", aspect="auto", cmap="magma", extent=(0, saliency.seconds, 0, bands))
    limit = max(float(np.abs(saliency.values).max()), 1e-6)
    image = ax_sal.imshow(
        saliency.values,
        origin="lower",
        aspect="auto",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        extent=(0, saliency.values.shape[1] * saliency.segment_seconds, 0, bands),
    )
    ticks = np.arange(0, bands + 1, max(1, bands // 4))
    for ax in (ax_mel, ax_sal):
        ax.set_yticks(ticks, [f"{saliency.band_edges[t]:.0f}" for t in ticks])
        ax.set_ylabel("Hz (mel scale)")
    ax_mel.set_title(title or f"log-mel; occlusion saliency for '{saliency.label}' (p = {saliency.score:.3f})")
    ax_sal.set(xlabel="seconds", xlim=(0, saliency.seconds))
    fig.colorbar(image, ax=[ax_mel, ax_sal], fraction=0.03, label="probability drop when removed")
    return fig


def explain_audio(
    model: RunModel,
    path: str | Path,
    start: float = 0.0,
    duration: float = 30.0,
    label: str | None = None,
    bands: int = 16,
    segment_seconds: float = 0.5,
) -> Saliency:
    """The saliency of `duration` seconds of an audio file from `start`."""
    if label is not None and label not in model.label_names:
        raise ValueError(f"label {label!r} is not one of the model's: {', '.join(model.label_names)}")
    y = read_window(path, model.sample_rate, start, duration)  # (T,)
    if len(y) < N_FFT:
        raise ValueError(f"{path}: {len(y) / model.sample_rate:.3f} s of audio from {start} s is too short to explain")
    target = None if label is None else model.label_names.index(label)
    return occlusion_saliency(model, y, target, bands, segment_seconds)


def save_saliency(saliency: Saliency, path: str | Path, out: Path) -> Path:
    """The PNG of an audio file's saliency at `out`."""
    title = f"{Path(path).name}: occlusion saliency for '{saliency.label}' (p = {saliency.score:.3f})"
    return save_figure(saliency_figure(saliency, title), out, dpi=DPI)


def explain_file(
    run_dir: str | Path,
    path: str | Path,
    out: str | Path | None = None,
    start: float = 0.0,
    duration: float = 30.0,
    label: str | None = None,
    bands: int = 16,
    segment_seconds: float = 0.5,
    model: RunModel | None = None,
) -> tuple[Path, Saliency]:
    """Explain `duration` seconds of an audio file from `start`; save the PNG (default
    RUN/explanations/<file stem>.png)."""
    saliency = explain_audio(model or RunModel(run_dir), path, start, duration, label, bands, segment_seconds)
    out = Path(out) if out else Path(run_dir) / "explanations" / f"{Path(path).stem}.png"
    return save_saliency(saliency, path, out), saliency
