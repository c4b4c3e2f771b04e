"""Tiny encoders behind the plug-in interface (`backbone.encoder=plugin_encoders:<factory>`): one
that works, and one broken in each way the builder refuses."""

import torch
from torch import nn

RATE = 16000
HOP = 400  # 40 frames a second at 16 kHz


class TinyEncoder(nn.Module):
    """Frames of `hop` samples -> a Linear embedding -> two residual feed-forward layers; returns
    the embedding and each layer's output (B, 3, T', D)."""

    sample_rate = RATE
    num_layers = 3

    def __init__(self, width: int = 8, hop: int = HOP, frame_rate: float = RATE / HOP):
        super().__init__()
        self.hop, self.frame_rate = hop, frame_rate
        self.embed = nn.Linear(hop, width)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(2))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio[:, : audio.shape[1] // self.hop * self.hop].reshape(audio.shape[0], -1, self.hop)
        states = [self.embed(frames)]
        for layer in self.layers:
            states.append(states[-1] + layer(states[-1]))
        return torch.stack(states, dim=1)


def tiny() -> TinyEncoder:
    return TinyEncoder()


def other() -> TinyEncoder:
    """Another encoder of the same shape (another factory): never shares cached embeddings with `tiny`."""
    return TinyEncoder()


class WrongRank(TinyEncoder):
    def forward(self, audio):
        return super().forward(audio)[:, -1]  # (B, T', D): the last layer only


class NotFinite(TinyEncoder):
    def forward(self, audio):
        return super().forward(audio) * float("nan")


class Raises(TinyEncoder):
    def forward(self, audio):
        raise RuntimeError("expected a (B, 1, T) input\n(a second line of the message)")


def raises() -> nn.Module:
    return Raises()


def wrong_rank() -> nn.Module:
    return WrongRank()


def nan_output() -> nn.Module:
    return NotFinite()


def other_rate() -> nn.Module:
    """Declares 16 kHz but cuts 10 ms frames as at 22.05 kHz: 72 frames a second, not the 100 it declares."""
    return TinyEncoder(hop=220, frame_rate=100.0)


def no_attributes() -> nn.Module:
    return nn.Linear(4, 4)
