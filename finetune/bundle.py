"""What every model builder returns, the arguments the toolkit hands every builder, and the label
entries every model's config carries.

A leaf module (it imports nothing of ours), so the builders (baselines, pretrained backbones) and
the registry above them (finetune.models) share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Builder parameters the toolkit fills, never `model.args`: every builder takes the first four;
# `lora` and `probe` go only to builders that declare them.
TOOLKIT_ARGS = ("num_labels", "label_names", "multi_label", "backbone", "lora", "probe")
EVERY_BUILDER_ARGS = TOOLKIT_ARGS[:4]


@dataclass
class ModelBundle:
    """A model with the feature extractor that turns waveforms at `sample_rate` into its inputs."""

    model: Any  # transformers.PreTrainedModel
    feature_extractor: Any  # transformers feature extractor
    sample_rate: int


def label_config(label_names: list[str], multi_label: bool) -> dict:
    """The config entries that name the labels and the task, for every model (`config.update(...)`)."""
    return {
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
        "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
    }
