"""HEAR modules as frozen encoders (`backbone.encoder=hear:package.module`, probe only).

A HEAR module offers `load_model(model_file_path="")` -> a model with `sample_rate`,
`scene_embedding_size` and `timestamp_embedding_size`, `get_scene_embeddings(audio, model)` and
`get_timestamp_embeddings(audio, model)` -> (embeddings (B, T, D), timestamps in ms (B, T)). Its
timestamp embeddings are the frames of the encoder's one layer; the frame rate is read off the
timestamps. Weights come from `load_model` (`model_file_path` empty: the module's own default) or
from `backbone.encoder_weights` (safetensors, read into the model like any encoder's).
"""

from __future__ import annotations

import torch
from torch import nn

from finetune.encoder_specs import cause

HEAR_FUNCTIONS = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")
HEAR_ATTRIBUTES = ("sample_rate", "scene_embedding_size", "timestamp_embedding_size")


def check_hear_module(module, spec: str) -> None:
    """Refuse a module without HEAR's three functions."""
    missing = [name for name in HEAR_FUNCTIONS if not callable(getattr(module, name, None))]
    if missing:
        raise ValueError(
            f"backbone.encoder={spec}: {module.__name__} is not a HEAR module: it has no "
            f"{', '.join(missing)} (HEAR's API: {', '.join(HEAR_FUNCTIONS)})"
        )


def load_hear_model(module, spec: str) -> nn.Module:
    """`module.load_model("")`, refused unless it is a torch module with HEAR's attributes."""
    try:
        model = module.load_model(model_file_path="")
    except Exception as err:  # the module's own loading may fail in any way
        raise ValueError(f"backbone.encoder={spec}: load_model raised {cause(err)}") from err
    missing = [name for name in HEAR_ATTRIBUTES if getattr(model, name, None) is None]
    if missing:
        raise ValueError(
            f"backbone.encoder={spec}: load_model returned a model without {', '.join(missing)} "
            f"(HEAR models declare {', '.join(HEAR_ATTRIBUTES)})"
        )
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"backbone.encoder={spec}: load_model returned a {type(model).__name__}, not a "
            "torch.nn.Module (only PyTorch HEAR modules plug in)"
        )
    return model


def frame_rate_of(module, model: nn.Module) -> float:
    """Frames a second of the module's timestamp embeddings, from the timestamps (ms) of 2 s of silence."""
    with torch.no_grad():
        _, timestamps = module.get_timestamp_embeddings(torch.zeros(1, 2 * int(model.sample_rate)), model)
    steps = torch.diff(torch.as_tensor(timestamps, dtype=torch.float64)[0])
    return 1000.0 / float(steps.median()) if len(steps) else 0.5  # one frame: one per 2 s


class HearEncoder(nn.Module):
    """A HEAR module behind the encoder interface: one layer, its timestamp embeddings (B, 1, T, D)."""

    num_layers = 1

    def __init__(self, module, spec: str):
        super().__init__()
        check_hear_module(module, spec)
        self.timestamp_embeddings = module.get_timestamp_embeddings  # a function: the model copies with it
        self.model = load_hear_model(module, spec)
        self.sample_rate = int(self.model.sample_rate)
        self.frame_rate = frame_rate_of(module, self.model)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        embeddings, _ = self.timestamp_embeddings(audio, self.model)  # (B, T, D)
        return embeddings.unsqueeze(1)
