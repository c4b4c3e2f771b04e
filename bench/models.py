"""The models the benchmarks train and run, built through the toolkit's registry from a recipe."""

from __future__ import annotations

from pathlib import Path

from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from finetune.models import ModelBundle, build_model
from finetune.recipe import Recipe, from_dict

LABELS = ["blues", "classical", "jazz", "rock"]
SAMPLE_RATE = 16_000  # the baselines' default rate and HuBERT's

# Random HuBERT configurations: the real 7-layer conv encoder (kernels, strides, group norm) at
# toy width, 12 transformer layers (a 13-layer probe sweep) or 2; and HuBERT-base as is, which is
# MERT-v1-95M's architecture (94.4 M parameters) at 16 kHz.
TINY_SPEECH = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=[32] * 7,
    classifier_proj_size=16,
)
TINY_SPEECH_12 = {**TINY_SPEECH, "num_hidden_layers": 12}
BASE_SPEECH: dict = {}


def bundle_for(sections: dict) -> tuple[Recipe, ModelBundle]:
    """The validated recipe of `sections` and the model its registry entry builds."""
    recipe = from_dict(sections)
    return recipe, build_model(recipe, LABELS, multi_label=False)


def baseline_cnn(**sections) -> tuple[Recipe, ModelBundle]:
    """simple_cnn (four conv blocks on a 96-mel log-mel front end), fresh weights."""
    return bundle_for({"model": {"name": "simple_cnn"}, **sections})


def speech_backbone(folder: Path, size: dict, mode: str, **sections) -> tuple[Recipe, ModelBundle]:
    """A random HuBERT of `size` saved to `folder`, built by the `hubert` backbone in `mode`."""
    HubertModel(HubertConfig(**size)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True, return_attention_mask=True).save_pretrained(
        folder
    )
    return bundle_for({"model": {"name": "hubert"}, "backbone": {"path": str(folder), "mode": mode}, **sections})
