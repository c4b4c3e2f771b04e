"""What sits between a backbone's hidden states and its logits: where the body ends, layer choice,
pooling, labels.

The native transformers classes already do mean pooling, a chosen layer (by dropping the layers
above it) and, for HuBERT / wav2vec2, a learned weighted sum of layers. The pieces here cover the
rest: attention pooling, and the weighted sum for AST, used by the small `finetune_*` subclasses.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

WEIGHTED = "weighted"


def base_model_name(model: nn.Module) -> str:
    """The attribute holding the pretrained body (everything beside it is head): `base_model_prefix`,
    or the one pretrained child of classifiers that keep their body elsewhere (Whisper's `encoder`)."""
    if hasattr(model, model.base_model_prefix):
        return model.base_model_prefix
    (name,) = [name for name, child in model.named_children() if isinstance(child, PreTrainedModel)]
    return name


def base_model_of(model: nn.Module) -> nn.Module:
    return model.get_submodule(base_model_name(model))


class AttentionPooling(nn.Module):
    """Learned softmax attention over time: (B, T, D) [+ (B, T) mask] -> (B, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)  # (B, T)
        return torch.einsum("bt,btd->bd", weights, hidden)


def weighted_layer_sum(hidden_states: tuple[torch.Tensor, ...], layer_weights: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted sum of every layer's output: L+1 x (B, T, D) -> (B, T, D)."""
    stacked = torch.stack(hidden_states, dim=1)  # (B, L+1, T, D)
    weights = layer_weights.softmax(dim=-1).view(1, -1, 1, 1)
    return (stacked * weights).sum(dim=1)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, D), counting only frames where the (B, T) mask is set."""
    if mask is None:
        return hidden.mean(dim=1)
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def resolve_layer(layer: str, num_layers: int) -> int | str:
    """Recipe `backbone.layer` -> WEIGHTED or a layer index in [0, num_layers].

    Index k is the output of the model cut after its first k transformer layers (0 = the
    embeddings); negative indices count from the end like Python's (-1 = the last layer).
    """
    if layer == WEIGHTED:
        return WEIGHTED
    if layer == "last":
        return num_layers
    index = int(layer)
    if not -(num_layers + 1) <= index <= num_layers:
        raise ValueError(
            f"backbone.layer={layer}: this model has layers 0..{num_layers} (0 = embeddings, {num_layers} = last)"
        )
    return index % (num_layers + 1)
