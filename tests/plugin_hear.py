"""A tiny module written to the HEAR API (`backbone.encoder=hear:plugin_hear`): 20 ms frames of the
waveform -> a Linear embedding."""

import torch
from torch import nn

HOP = 320  # 20 ms at 16 kHz


class TinyHear(nn.Module):
    sample_rate = 16000
    scene_embedding_size = 6
    timestamp_embedding_size = 6

    def __init__(self):
        super().__init__()
        self.project = nn.Linear(HOP, self.timestamp_embedding_size)


def load_model(model_file_path: str = "") -> TinyHear:
    return TinyHear()


def get_timestamp_embeddings(audio: torch.Tensor, model: TinyHear) -> tuple[torch.Tensor, torch.Tensor]:
    frames = audio[:, : audio.shape[1] // HOP * HOP].reshape(audio.shape[0], -1, HOP)
    embeddings = model.project(frames)  # (B, T, D)
    timestamps = (torch.arange(frames.shape[1]) * HOP + HOP / 2) / model.sample_rate * 1000.0
    return embeddings, timestamps.expand(audio.shape[0], -1)


def get_scene_embeddings(audio: torch.Tensor, model: TinyHear) -> torch.Tensor:
    return get_timestamp_embeddings(audio, model)[0].mean(dim=1)
