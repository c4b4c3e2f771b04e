"""MERT-v1 (m-a-p/MERT-v1-95M, m-a-p/MERT-v1-330M) as transformers' native HuBERT, 24 kHz.

MERT's own remote code breaks on many transformers versions; its v1 checkpoints are HuBERT with
another `model_type` (same state-dict keys, identical outputs), so the config is translated and
the weights load into `HubertForSequenceClassification` without `trust_remote_code`.
"""

from __future__ import annotations

from transformers import HubertForSequenceClassification

from finetune.backbones.common import build_backbone
from finetune.backbones.wav2vec2 import HubertPooledForSequenceClassification, speech_family

# MERT config keys HuBERT lacks, with the value under which MERT computes what HuBERT does.
MERT_ONLY = {"feature_extractor_cqt": False, "deepnorm": False}
# Dropped: `attention_relax` (MERT-330M) subtracts each row's maximum before the softmax, which
# leaves the softmax unchanged; the rest describe the checkpoint, not the network.
MERT_EXTRA = (
    "attention_relax",
    "feature_extractor_cqt_bins",
    "sample_rate",
    "tokenizer_class",
    "feat_extract_dropout",
    "hidden_dropout_prob",
    "gradient_checkpointing",
    "torch_dtype",
)


def translate_mert(raw: dict) -> dict:
    """MERT config.json (model_type mert_model) -> HuBERT settings; other configs pass through."""
    if raw.get("model_type") != "mert_model":
        return raw
    for key, plain in MERT_ONLY.items():
        if raw.get(key, plain) != plain:
            raise ValueError(
                f"MERT config {key}={raw[key]!r} has no HuBERT equivalent (MERT-v1 checkpoints use {plain!r})"
            )
    drop = set(MERT_ONLY) | set(MERT_EXTRA)
    return {**{k: v for k, v in raw.items() if k not in drop}, "model_type": "hubert"}


def build_mert(num_labels: int, label_names: list[str], multi_label: bool, backbone, lora):
    """MERT-v1 95M / 330M (backbone.path) loaded as native HuBERT, 24 kHz waveform."""
    return build_backbone(MERT, num_labels, label_names, multi_label, backbone, lora)


# `auto` reads translated MERT checkpoints (model_type hubert) as HuBERT ones, its own by mert_model.
MERT = speech_family(
    "mert",
    "m-a-p/MERT-v1-95M",
    "hubert",
    HubertForSequenceClassification,
    HubertPooledForSequenceClassification,
    build_mert,
    "m-a-p/MERT",
    "cc-by-nc-4.0",
    sample_rate=24000,
    do_normalize=False,
    translate=translate_mert,
    auto_types=("mert_model",),
)
