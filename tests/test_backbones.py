"""Pretrained backbones on tiny random checkpoints: loading, layers, pooling, modes, LoRA, AST."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    ASTForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
    HubertModel,
    Wav2Vec2ForSequenceClassification,
    pipeline,
)

from backbone_fixtures import SPEECH_SIZE, build_tiny, one_torch_thread, save_mert_format, tiny_backbones  # noqa: F401  fixtures
from data_fixtures import write_audio
from finetune.backbones import BACKBONE_BUILDERS, FAMILIES
from finetune.backbones.common import read_config
from finetune.backbones.lora import OWN_PARAMETERS_FILE, export_ready, load_adapter, lora_layers, save_adapter
from finetune.models import load_model
from finetune.probe import probe_layers, track_file
from finetune.recipe import BackboneConfig, LoraConfig

NATIVE = {
    "mert": HubertForSequenceClassification,
    "hubert": HubertForSequenceClassification,
    "wav2vec2": Wav2Vec2ForSequenceClassification,
    "ast": ASTForAudioClassification,
}
BACKBONES = list(FAMILIES)  # the registry; NATIVE must say what each one builds


def batch(bundle, count: int = 2, seconds: float = 1.0, seed: int = 0) -> dict:
    """The model's inputs for `count` random waveforms, through its own feature extractor."""
    rng = np.random.default_rng(seed)
    waves = [rng.standard_normal(int(seconds * bundle.sample_rate)).astype(np.float32) * 0.1 for _ in range(count)]
    return dict(bundle.feature_extractor(waves, sampling_rate=bundle.sample_rate, return_tensors="pt"))


def logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_registry_names_each_backbone_with_the_toolkit_signature(tiny_backbones):
    assert set(BACKBONE_BUILDERS) == set(FAMILIES) == set(NATIVE) == set(tiny_backbones)  # each family tested
    for builder in BACKBONE_BUILDERS.values():
        params = list(__import__("inspect").signature(builder).parameters)
        assert params[:5] == ["num_labels", "label_names", "multi_label", "backbone", "lora"]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("multi_label", [False, True])
def test_builds_the_native_class_with_labels_and_its_extractor(tiny_backbones, name, multi_label):
    bundle = build_tiny(tiny_backbones, name, labels=4, multi_label=multi_label)
    assert type(bundle.model) is NATIVE[name]
    config = bundle.model.config
    assert config.id2label == {i: f"label{i}" for i in range(4)} and config.label2id["label3"] == 3
    task = "multi_label_classification" if multi_label else "single_label_classification"
    assert config.problem_type == task
    assert bundle.sample_rate == {"mert": 24000}.get(name, 16000) == bundle.feature_extractor.sampling_rate
    extractor = "ASTFeatureExtractor" if name == "ast" else "Wav2Vec2FeatureExtractor"
    assert type(bundle.feature_extractor).__name__ == extractor
    assert logits(bundle.model, batch(bundle)).shape == (2, 4)


def test_mert_loads_as_hubert_from_merts_own_format(tiny_backbones):
    """config model_type mert_model, auto_map and weight_g / weight_v keys: no remote code."""
    folder = tiny_backbones["mert"]
    saved = load_file(str(folder / "model.safetensors"))
    assert "encoder.pos_conv_embed.conv.weight_g" in saved
    settings = read_config(FAMILIES["mert"], str(folder))
    assert "auto_map" not in settings and "feature_extractor_cqt" not in settings
    _, info = HubertModel.from_pretrained(folder, config=HubertConfig.from_dict(settings), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    bundle = build_tiny(tiny_backbones, "mert")
    assert torch.equal(
        bundle.model.hubert.encoder.layers[1].attention.q_proj.weight, saved["encoder.layers.1.attention.q_proj.weight"]
    )
    assert bundle.model.config.model_type == "hubert" and bundle.feature_extractor.do_normalize is False


@pytest.mark.slow
def test_real_mert_95m_config_has_94_371_712_parameters_and_loads_merts_keys(realdata, tmp_path):
    """The published MERT-v1-95M config and preprocessor, random weights saved under MERT's names."""
    hub = realdata / "hub" / "MERT-v1-95M"
    raw = json.loads((hub / "config.json").read_text())
    settings = read_config(FAMILIES["mert"], str(hub))
    model = HubertModel(HubertConfig.from_dict(settings))
    assert sum(p.numel() for p in model.parameters()) == 94_371_712
    folder = save_mert_format(model, tmp_path / "mert95", extra_config=raw)
    (folder / "preprocessor_config.json").write_text((hub / "preprocessor_config.json").read_text())
    _, info = HubertModel.from_pretrained(folder, config=HubertConfig.from_dict(settings), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    bundle = BACKBONE_BUILDERS["mert"](
        num_labels=50,
        label_names=[str(i) for i in range(50)],
        multi_label=True,
        backbone=BackboneConfig(path=str(folder)),
        lora=LoraConfig(),
    )
    assert sum(p.numel() for p in bundle.model.hubert.parameters()) == 94_371_712
    assert bundle.sample_rate == 24000
    assert torch.equal(bundle.model.hubert.encoder.pos_conv_embed.conv.weight, model.encoder.pos_conv_embed.conv.weight)


def test_a_checkpoint_missing_backbone_weights_is_refused(tiny_backbones, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "broken"
    folder.mkdir()
    for item in tiny_backbones["hubert"].iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    state = load_file(str(folder / "model.safetensors"))
    del state["encoder.layers.0.attention.q_proj.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="backbone weights are not in the checkpoint"):
        build_tiny({"hubert": folder}, "hubert")


@pytest.mark.parametrize("name", ["mert", "wav2vec2", "ast"])
def test_layer_index_keeps_the_layers_up_to_it_and_matches_the_probe_features(tiny_backbones, name):
    """Layer k = the model cut after k layers; the probe's per-layer features are exactly that."""
    family = FAMILIES[name]
    full = build_tiny(tiny_backbones, name, mode="probe")
    inputs = batch(full)
    with torch.no_grad():
        features = family.layer_features(
            full.model.eval(), inputs["input_values"], inputs.get("attention_mask")
        )  # (B, L+1, D)
    assert features.shape[1] == 3
    for layer in (0, 1, -1):
        torch.manual_seed(0)
        cut = build_tiny(tiny_backbones, name, layer=str(layer))
        assert cut.model.config.num_hidden_layers == layer % 3
        with torch.no_grad():
            expected = family.head(cut.model, features[:, layer])
        assert torch.allclose(logits(cut.model, inputs), expected, atol=1e-5)


def test_pre_norm_models_follow_the_cut_layer_with_the_final_norm(tiny_backbones, tmp_path):
    """MERT-330M and wav2vec2-large are pre-norm (do_stable_layer_norm): same guarantee there."""
    config = HubertConfig(
        **{**SPEECH_SIZE, "do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True}
    )
    folder = save_mert_format(HubertModel(config), tmp_path / "mert330-like")
    full = build_tiny({"mert": folder}, "mert", mode="probe")
    inputs = batch(full)
    with torch.no_grad():
        features = FAMILIES["mert"].layer_features(full.model.eval(), inputs["input_values"], inputs["attention_mask"])
    cut = build_tiny({"mert": folder}, "mert", layer="1")
    with torch.no_grad():
        expected = FAMILIES["mert"].head(cut.model, features[:, 1])
    assert torch.allclose(logits(cut.model, inputs), expected, atol=1e-5)


def test_layer_index_out_of_range_names_the_valid_range(tiny_backbones):
    with pytest.raises(ValueError, match="layers 0..2"):
        build_tiny(tiny_backbones, "hubert", layer="5")


@pytest.mark.parametrize("name", BACKBONES)
def test_weighted_layers_set_layerdrop_zero_and_train_without_crashing(tiny_backbones, name):
    bundle = build_tiny(tiny_backbones, name, layer="weighted")
    model = bundle.model.train()
    assert model.layer_weights.requires_grad
    assert torch.allclose(model.layer_weights, torch.full((3,), 1 / 3))  # equal weights to start
    assert getattr(model.config, "layerdrop", 0.0) == 0.0  # the tiny checkpoints have 0.1
    inputs = batch(bundle, count=2)
    for _ in range(6):  # with layerdrop > 0 about half of these steps would crash
        model(**inputs).logits.sum().backward()
    assert model.layer_weights.grad is not None


def test_ast_weighted_sum_and_attention_pooling_use_the_finetune_subclass(tiny_backbones):
    weighted = build_tiny(tiny_backbones, "ast", layer="weighted")
    assert weighted.model.config.model_type == "finetune_ast"
    attention = build_tiny(tiny_backbones, "hubert", pooling="attention")
    assert attention.model.config.model_type == "finetune_hubert"
    assert attention.model.pooler.score.weight.requires_grad


@pytest.mark.parametrize("name", ["hubert", "ast"])
def test_finetune_subclasses_save_and_load_back_by_name(tiny_backbones, tmp_path, name):
    bundle = build_tiny(tiny_backbones, name, pooling="attention", layer="weighted")
    bundle.model.save_pretrained(tmp_path / "model")
    bundle.feature_extractor.save_pretrained(tmp_path / "model")
    loaded = load_model(tmp_path / "model")  # finetune.backbones is imported: the types are registered
    assert type(loaded.model) is type(bundle.model)
    inputs = batch(bundle)
    assert torch.allclose(logits(loaded.model, inputs), logits(bundle.model, inputs), atol=1e-6)


@pytest.mark.parametrize("name", ["mert", "ast"])
def test_full_mode_trains_everything_but_the_conv_feature_encoder(tiny_backbones, name):
    model = build_tiny(tiny_backbones, name).model
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    if name == "ast":
        assert not frozen  # AST has no convolutional feature encoder
        return
    assert frozen and all(".feature_extractor." in n for n in frozen)
    model = build_tiny(tiny_backbones, name, freeze_feature_encoder=False).model
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_probe_mode_freezes_all_but_the_head(tiny_backbones, name):
    model = build_tiny(tiny_backbones, name, mode="probe").model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("projector.", "classifier.")) for n in trainable)


def test_probe_mode_keeps_every_layer_and_refuses_attention_pooling(tiny_backbones):
    with pytest.raises(ValueError, match="pooling=mean"):
        build_tiny(tiny_backbones, "hubert", mode="probe", pooling="attention")
    model = build_tiny(tiny_backbones, "hubert", mode="probe", layer="weighted").model  # probe.layers decides
    assert model.config.num_hidden_layers == 2 and not model.config.use_weighted_layer_sum


def lora_step(model, inputs) -> dict:
    """One optimiser step on everything trainable; returns the state before it."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()(**inputs).logits.square().sum().backward()
    optimiser.step()
    return before


@pytest.mark.parametrize("name", BACKBONES)
def test_lora_trains_only_adapters_head_and_layer_weights(tiny_backbones, name):
    bundle = build_tiny(tiny_backbones, name, mode="lora", layer="weighted")
    model = bundle.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_" in n}
    targets = {"q_proj", "k_proj", "v_proj", "o_proj" if name == "ast" else "out_proj"}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == targets
    assert len(adapters) == 2 * len(targets) * 2  # A and B, per target, per layer
    head = trainable - adapters
    assert "layer_weights" in head
    assert all(n.split(".")[0] in ("layer_weights", "projector", "classifier") for n in head)
    before = lora_step(model, batch(bundle))
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed <= trainable  # nothing frozen moved
    assert {n for n in adapters if "lora_B" in n} <= changed  # lora_A moves from the 2nd step
    assert model.layer_weights.grad.abs().sum() > 0


def test_lora_targets_are_checked_against_the_backbone(tiny_backbones):
    with pytest.raises(ValueError, match="o_proj not in this backbone"):
        build_tiny(tiny_backbones, "hubert", mode="lora", lora=LoraConfig(target_modules=["q_proj", "o_proj"]))
    bundle = build_tiny(
        tiny_backbones, "hubert", mode="lora", lora=LoraConfig(target_modules=["intermediate_dense", "output_dense"])
    )
    adapted = {n.rsplit(".", 1)[-1] for n, _ in lora_layers(bundle.model)}
    assert adapted == {"intermediate_dense", "output_dense"}


@pytest.mark.parametrize("name", ["mert", "ast"])
def test_lora_export_merges_into_a_plain_model_that_loads_with_equal_logits(tiny_backbones, tmp_path, name):
    bundle = build_tiny(tiny_backbones, name, mode="lora", lora=LoraConfig(r=4, alpha=8, dropout=0.1))
    inputs = batch(bundle)
    lora_step(bundle.model, inputs)  # adapters move off their zero start
    expected = logits(bundle.model, inputs)
    merged = export_ready(bundle.model)
    assert type(merged) is NATIVE[name] and not lora_layers(merged)
    assert lora_layers(bundle.model), "the trained model itself is left as it was"
    merged.save_pretrained(tmp_path / "model")
    bundle.feature_extractor.save_pretrained(tmp_path / "model")
    assert not [k for k in load_file(str(tmp_path / "model" / "model.safetensors")) if "lora" in k]
    loaded = load_model(tmp_path / "model")
    assert type(loaded.model) is NATIVE[name]
    assert torch.allclose(logits(loaded.model, inputs), expected, atol=1e-5)


@pytest.mark.parametrize("name,layer", [("wav2vec2", "1"), ("mert", "weighted"), ("ast", "weighted")])
def test_adapter_folder_loads_back_with_the_trained_head_and_layer_weights(tiny_backbones, tmp_path, name, layer):
    from peft import PeftModel

    bundle = build_tiny(tiny_backbones, name, mode="lora", layer=layer)
    inputs = batch(bundle)
    lora_step(bundle.model, inputs)
    weighted = layer == "weighted"
    if weighted:  # far from the equal weights a fresh base starts with
        with torch.no_grad():
            bundle.model.layer_weights.copy_(torch.tensor([3.0, -2.0, 0.5]))
    expected = logits(bundle.model, inputs)
    folder = save_adapter(bundle.model, tmp_path / "adapter")
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert (OWN_PARAMETERS_FILE in files) == weighted

    def fresh():  # the pretrained backbone with a new random head, as a user rebuilds it
        return build_tiny(tiny_backbones, name, layer=layer).model

    error = (logits(load_adapter(fresh(), folder), inputs) - expected).abs().max()
    assert error < 1e-5
    if weighted:  # peft alone leaves the layer weights at their start
        plain = logits(PeftModel.from_pretrained(fresh(), folder), inputs)
        assert (plain - expected).abs().max() > 100 * error


def test_merged_export_runs_in_a_transformers_pipeline(tiny_backbones, tmp_path):
    bundle = build_tiny(tiny_backbones, "mert", mode="lora")
    export_ready(bundle.model).save_pretrained(tmp_path / "model")
    bundle.feature_extractor.save_pretrained(tmp_path / "model")
    classify = pipeline("audio-classification", model=str(tmp_path / "model"))
    scores = classify(np.zeros(24000, dtype=np.float32) + 0.01, top_k=3)
    assert {s["label"] for s in scores} <= {"label0", "label1", "label2"} and len(scores) == 3


def test_ast_new_label_count_keeps_the_pretrained_position_embeddings(tiny_backbones):
    saved = load_file(str(tiny_backbones["ast"] / "model.safetensors"))
    positions = saved["audio_spectrogram_transformer.embeddings.position_embeddings"]
    model = build_tiny(tiny_backbones, "ast", labels=3).model  # the checkpoint has 5 labels
    assert torch.equal(model.audio_spectrogram_transformer.embeddings.position_embeddings, positions)
    assert model.classifier.dense.out_features == 3


def test_ast_max_length_interpolates_positions_instead_of_zeroing_them(tiny_backbones):
    from finetune.backbones.ast import build_ast

    saved = load_file(str(tiny_backbones["ast"] / "model.safetensors"))
    old = saved["audio_spectrogram_transformer.embeddings.position_embeddings"]  # (1, 2 + 2 * 12, D)
    bundle = build_ast(
        3, ["a", "b", "c"], False, BackboneConfig(path=str(tiny_backbones["ast"])), LoraConfig(), max_length=248
    )  # 2 x 24 patches
    new = bundle.model.audio_spectrogram_transformer.embeddings.position_embeddings
    assert new.shape == (1, 2 + 2 * 24, old.shape[-1])
    assert torch.equal(new[:, :2], old[:, :2])  # [CLS] and distillation tokens as they were
    grid = new[0, 2:].reshape(2, 24, -1)
    assert grid.abs().min() > 0  # interpolated, not zeroed
    assert torch.allclose(grid.mean(dim=1), old[0, 2:].reshape(2, 12, -1).mean(dim=1), atol=0.1)
    assert bundle.feature_extractor.max_length == 248
    inputs = batch(bundle, seconds=2.48)
    assert inputs["input_values"].shape == (2, 248, 32)
    assert logits(bundle.model, inputs).shape == (2, 3)


def test_probe_layers_parse_last_all_and_indices():
    assert probe_layers("last", 12) == [12]
    assert probe_layers("all", 2) == [0, 1, 2]
    assert probe_layers("6, 3,-1", 12) == [3, 6, 12]
    for bad in ("weighted", "3,x", ""):
        with pytest.raises(ValueError):
            probe_layers(bad, 12)


def test_probe_cache_key_follows_a_file_rewritten_in_place(tmp_path):
    path = tmp_path / "clip.wav"
    write_audio(path, seconds=2.0, sample_rate=16000, seed=0)

    def key() -> str:
        return track_file(tmp_path / "cache", str(path)).name

    first = key()
    assert key() == first  # the same file, the same key
    stamp = os.stat(path)
    write_audio(path, seconds=2.0, sample_rate=16000, seed=1)  # same length and size, new audio
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert os.stat(path).st_size == stamp.st_size and key() != first
