"""Tiny pretrained-backbone checkpoints for the backbone tests, written once per session.

Each keeps the real code path at toy width: the 7-layer conv feature encoder with the real
kernels and strides and group norm, 2 transformer layers, hidden size 32; AST on a 32-bin,
128-frame mel grid. The MERT folder is in MERT's own format (model_type mert_model, auto_map,
`weight_g` / `weight_v` key names), as m-a-p publishes it. For `model.name=auto`: WavLM,
data2vec-audio, UniSpeech-SAT, SEW and Whisper at the same width.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    SEWConfig,
    SEWModel,
    UniSpeechSatConfig,
    UniSpeechSatModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from data_fixtures import write_annotations, write_audio
from finetune.data.gtzan import GENRES
from finetune.models import ModelBundle
from finetune.recipe import BackboneConfig, LoraConfig

SPEECH_SIZE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],  # the real kernels and
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],  # strides: 400-sample receptive field, hop 320
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "classifier_proj_size": 16,
    "feat_extract_norm": "group",
    "mask_time_prob": 0.05,
    "mask_time_length": 2,
    "layerdrop": 0.1,
}
TAGS = ["guitar", "piano", "drums", "vocal"]
AST_SIZE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_mel_bins": 32,
    "max_length": 128,
    "num_labels": 5,
}  # 2 x 12 patches; 5 "AudioSet" labels

# MERT-v1's config.json entries that are not HuBERT's (values as published).
MERT_FIELDS = {
    "model_type": "mert_model",
    "architectures": ["MERTModel"],
    "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    "attention_relax": -1.0,
    "deepnorm": False,
    "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336,
    "sample_rate": 24000,
    "hidden_dropout_prob": 0.1,
}


def mert_key(key: str) -> str:
    """transformers' weight-norm parameter names -> the ones MERT's checkpoints use."""
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


def save_mert_format(model: HubertModel, folder: Path, extra_config: dict | None = None) -> Path:
    """Write a HuBERT model the way m-a-p publishes MERT: MERT config and key names."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_dict(), **MERT_FIELDS, **(extra_config or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {mert_key(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def make_tiny_backbones(root: Path) -> dict[str, Path]:
    """name -> folder of a tiny random checkpoint for each backbone."""
    torch.manual_seed(0)
    folders = {name: root / name for name in ("mert", "hubert", "wav2vec2", "ast")}
    save_mert_format(HubertModel(HubertConfig(**SPEECH_SIZE)), folders["mert"])
    HubertModel(HubertConfig(**SPEECH_SIZE)).save_pretrained(folders["hubert"])
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folders["hubert"])
    Wav2Vec2Model(Wav2Vec2Config(**SPEECH_SIZE)).save_pretrained(folders["wav2vec2"])
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folders["wav2vec2"])
    ast = ASTForAudioClassification(ASTConfig(**AST_SIZE))
    with torch.no_grad():  # AST initialises positions and tokens to zero: make them tell apart
        ast.audio_spectrogram_transformer.embeddings.position_embeddings.normal_(0, 0.5)
    ast.save_pretrained(folders["ast"])
    ASTFeatureExtractor(num_mel_bins=32, max_length=128).save_pretrained(folders["ast"])
    return folders


# Checkpoints for model.name=auto, each as its Hub models are published (the body alone; Whisper
# whole, decoder included). Whisper at toy size: 16 mel bins, 1 s inputs (100 frames -> 50 positions).
WHISPER_SIZE = {
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 2,
    "decoder_ffn_dim": 64,
    "num_mel_bins": 16,
    "max_source_positions": 50,
    "classifier_proj_size": 16,
    "vocab_size": 100,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 3,
}
AUTO_MODELS = {
    "wavlm": lambda: WavLMModel(WavLMConfig(**SPEECH_SIZE)),
    "data2vec-audio": lambda: Data2VecAudioModel(Data2VecAudioConfig(**{**SPEECH_SIZE, "num_conv_pos_embeddings": 2})),
    "unispeech-sat": lambda: UniSpeechSatModel(UniSpeechSatConfig(**SPEECH_SIZE)),
    "sew": lambda: SEWModel(SEWConfig(**SPEECH_SIZE, squeeze_factor=2)),
    "whisper": lambda: WhisperForConditionalGeneration(WhisperConfig(**WHISPER_SIZE)),
}


def make_tiny_auto_checkpoints(root: Path) -> dict[str, Path]:
    """model_type -> folder of a tiny random checkpoint with its feature extractor."""
    torch.manual_seed(0)
    folders = {}
    for name, model in AUTO_MODELS.items():
        folders[name] = root / name
        model().save_pretrained(folders[name])
        extractor = (
            WhisperFeatureExtractor(feature_size=16, chunk_length=1)
            if name == "whisper"
            else Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True)
        )
        extractor.save_pretrained(folders[name])
    return folders


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Toy-sized models run fastest on one thread (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, Path]:
    """Tiny MERT (MERT's format), HuBERT, wav2vec2 and AST folders, saved once per session."""
    return make_tiny_backbones(tmp_path_factory.mktemp("tiny-backbones"))


def build_tiny(
    tiny_backbones,
    name: str,
    mode: str = "full",
    labels: int = 3,
    multi_label: bool = False,
    lora: LoraConfig | None = None,
    **backbone,
) -> ModelBundle:
    """A backbone builder called the way the toolkit calls it, on a tiny checkpoint."""
    from finetune.backbones import BACKBONE_BUILDERS

    return BACKBONE_BUILDERS[name](
        num_labels=labels,
        label_names=[f"label{i}" for i in range(labels)],
        multi_label=multi_label,
        backbone=BackboneConfig(path=str(tiny_backbones[name]), mode=mode, **backbone),
        lora=lora or LoraConfig(r=4, alpha=8, dropout=0.0),
    )


@pytest.fixture(scope="session")
def tiny_auto_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny WavLM, data2vec-audio, UniSpeech-SAT, SEW and Whisper folders, saved once per session."""
    return make_tiny_auto_checkpoints(tmp_path_factory.mktemp("tiny-auto"))


TINY_GTZAN = ["data.split_scheme=random", "data.group_by=none"]  # the clips are generated: no artist


@pytest.fixture(scope="session")
def tiny_gtzan(tmp_path_factory) -> Path:
    """GTZAN's layout (genres/<genre>/<genre>.000NN.wav), 4 clips of 2.5 s per genre: with
    split_scheme=random, 2 train / 1 validation / 1 test clips per genre (with `TINY_GTZAN`: the
    generated clips bear real GTZAN names, whose artists would otherwise group them)."""
    root = tmp_path_factory.mktemp("tiny-gtzan")
    for g, genre in enumerate(GENRES):
        for n in range(4):
            write_audio(
                root / "genres" / genre / f"{genre}.{n:05d}.wav", seconds=2.5, sample_rate=16000, seed=10 * g + n
            )
    return root


@pytest.fixture(scope="session")
def tiny_mtat(tmp_path_factory) -> Path:
    """MTAT's layout: annotations_final.csv (tab-separated, quoted) and 3 s MP3s in folders 0-f;
    1 clip per train folder 0-b, 4 validation (c), 6 test (d-f); each split has each tag on and off."""
    root = tmp_path_factory.mktemp("tiny-mtat")
    folders = [f for f in "0123456789abcdef" for _ in range(4 if f == "c" else 2 if f in "def" else 1)]
    ids = [str(1000 + i) for i in range(len(folders))]
    paths = [f"{folder}/artist-album-{i:03d}-0-29.mp3" for i, folder in enumerate(folders)]
    for i, path in enumerate(paths):
        write_audio(root / path, seconds=3.0, sample_rate=16000, seed=i)
    tags = np.zeros((len(ids), len(TAGS)), dtype=int)  # (N, T)
    for i in range(len(ids)):
        tags[i, [i % 4, (i + 1) % 4]] = 1
    write_annotations(root / "annotations_final.csv", ids, paths, TAGS, tags)
    return root
