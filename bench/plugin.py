"""Plug-in encoders: what `model.name=encoder` costs over the bare module, in the same run.

The encoder (`encoder` here, a conv framing + transformer layers, random weights) is plugged in by
its factory (`backbone.encoder=bench.plugin:encoder`). Training step: the toolkit's Trainer step of
the plug-in model (full fine-tune) vs a bare PyTorch loop over the bare module + a linear head
(mean over time, cross-entropy), same weights and batches (bench.step's arms). Frozen embedding
pass: the probe's per-layer features of the plug-in model (`embedder_for(...).layer_features`,
what the embedding cache stores) vs the bare module's outputs averaged over time, same batches.
Median seconds per batch, the arms alternating in rounds. Target (ours): the step as bench.step's,
the pass within 5 %.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from bench.models import SAMPLE_RATE, bundle_for
from bench.step import SIZES, TARGET as STEP_TARGET, Size, bare_arm, crops, sections, trainer_arm
from bench.timing import Result, alternate, median, once
from finetune.clips import AudioCollator
from finetune.probe import embedder_for

PASS_TARGET = 1.05
HOP, WINDOW = 320, 400  # 20 ms frames of 25 ms at 16 kHz


class BenchEncoder(nn.Module):
    """Conv framing -> `layers` transformer layers; every layer's output (B, layers + 1, T', width)."""

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE / HOP

    def __init__(self, width: int, layers: int):
        super().__init__()
        self.num_layers = layers + 1
        self.frames = nn.Conv1d(1, width, kernel_size=WINDOW, stride=HOP)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, batch_first=True)
            for _ in range(layers)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        states = [self.frames(audio.unsqueeze(1)).transpose(1, 2)]  # (B, T', width)
        for layer in self.layers:
            states.append(layer(states[-1]))
        return torch.stack(states, dim=1)


def encoder() -> BenchEncoder:
    """A small music encoder's shape: width 256, 4 layers."""
    return BenchEncoder(256, 4)


def tiny_encoder() -> BenchEncoder:
    return BenchEncoder(32, 2)


class BareClassifier(nn.Module):
    """The bare module with the plug-in model's head written by hand: last layer, mean, linear."""

    def __init__(self, module: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.module, self.classifier = module, classifier

    def forward(self, input_values: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(self.module(input_values)[:, -1].mean(dim=1)))


def embedding_arms(model, batches: list[torch.Tensor]) -> dict:
    """The probe's feature pass of the plug-in model and the bare module's, one batch a call."""
    features = embedder_for("encoder", model).layer_features

    def plugged(batch):
        return features(model, batch, None)

    def bare(batch):
        return model.encoder(batch).mean(dim=2)

    def arm(forward) -> list[float]:
        with torch.no_grad():
            return [sample for batch in batches for sample in once(partial(forward, batch))()]

    return {"toolkit": partial(arm, plugged), "bare": partial(arm, bare)}


def run(quick: bool) -> list[Result]:
    size: Size = SIZES[quick]
    spec = "bench.plugin:tiny_encoder" if quick else "bench.plugin:encoder"
    recipe, bundle = bundle_for(
        {"model": {"name": "encoder"}, "backbone": {"encoder": spec, "mode": "full"}, **sections(size)}
    )
    model = bundle.model
    bare = BareClassifier(model.encoder, model.classifier)
    items = crops(size.batch * (size.warmup + size.steps), int(round(size.clip_seconds * SAMPLE_RATE)))
    collator = AudioCollator(bundle.feature_extractor, bundle.sample_rate)
    case = (
        f"{spec.split(':')[1]} ({model.config.num_hidden_layers + 1} layers), batch {size.batch} x "
        f"{size.clip_seconds:g} s, fp32"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        arms = {
            "toolkit": trainer_arm(recipe, model, items, collator, size, folder / "toolkit"),
            "bare": bare_arm(recipe, bare, items, collator, size, folder / "bare"),
        }
        step = alternate(arms, size.rounds)
    batches = [collator(items[i : i + size.batch])["input_values"] for i in range(0, len(items), size.batch)]
    passes = alternate(embedding_arms(model.eval(), batches), size.rounds, warmup_rounds=1)
    return [
        Result(
            "plugin",
            f"training step, {case}",
            median(step["toolkit"]),
            median(step["bare"]),
            "s/step",
            STEP_TARGET,
            higher_is_better=False,
        ),
        Result(
            "plugin",
            f"frozen embedding pass, {case}",
            median(passes["toolkit"]),
            median(passes["bare"]),
            "s/batch",
            PASS_TARGET,
            higher_is_better=False,
        ),
    ]
