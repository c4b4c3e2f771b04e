"""`model.name=auto`: tiny WavLM, data2vec-audio, UniSpeech-SAT, SEW and Whisper checkpoints trained in
every mode through the real entry point and exported as plain transformers models; the probe's
per-layer features, the LoRA targets found for every audio classifier, the named families it hands
over to, and the errors for what it cannot build."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    BertConfig,
    GPT2Config,
    HubertForSequenceClassification,
    pipeline,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

from backbone_fixtures import one_torch_thread, tiny_auto_checkpoints, tiny_backbones  # noqa: F401  fixtures
from finetune import recipe as recipes
from finetune.backbones import auto_family
from finetune.backbones.auto import build_auto, find_layers
from finetune.backbones.heads import base_model_of
from finetune.backbones.lora import default_targets
from finetune.cli import main
from finetune.data.synthetic import CLASSES
from finetune.models import build_model
from finetune.recipe import BackboneConfig, LoraConfig
from finetune.run import learning_rates

NATIVE = {
    "wavlm": "WavLMForSequenceClassification",
    "data2vec-audio": "Data2VecAudioForSequenceClassification",
    "unispeech-sat": "UniSpeechSatForSequenceClassification",
    "sew": "SEWForSequenceClassification",
    "whisper": "WhisperForAudioClassification",
}
# mode -> the layer setting each run also exercises
MODES = {"full": "backbone.layer=1", "lora": "backbone.layer=weighted", "probe": "probe.layers=all"}
HEAD = ("projector", "classifier", "layer_weights")
# LoRA's default targets: the attention projections, or (WavLM, whose attention reads its projections'
# weights without calling them) the feed-forward layers
LORA_TARGETS = {"wavlm": {"intermediate_dense", "output_dense"}}


def run(checkpoint, data_root, out, mode: str, *extra) -> int:
    """The demo recipe on an auto checkpoint for 2 steps, in this process."""
    return main(
        [
            "--recipe",
            "demo",
            "model.name=auto",
            "model.args={}",
            f"backbone.path={checkpoint}",
            f"backbone.mode={mode}",
            "data.split_scheme=random",
            f"data.root={data_root}",
            "data.max_tracks=8",
            "train.max_steps=2",
            "train.batch_size=2",
            "data.num_workers=0",
            "eval.durations=null",
            "data.clip_seconds=1.0",
            f"output_dir={out}",
            *extra,
        ]
    )


def build(folder, mode: str = "full", layer: str = "last", **backbone):
    return build_auto(
        3,
        ["a", "b", "c"],
        False,
        BackboneConfig(path=str(folder), mode=mode, layer=layer, **backbone),
        LoraConfig(r=4, alpha=8, dropout=0.0),
    )


def batch(bundle) -> dict:
    """A padded batch of 1 s and 0.75 s through the checkpoint's own extractor (with its attention mask)."""
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(int(s * bundle.sample_rate)).astype(np.float32) * 0.1 for s in (1.0, 0.75)]
    return dict(bundle.feature_extractor(waves, sampling_rate=bundle.sample_rate, return_tensors="pt", padding=True))


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(NATIVE))
def test_every_mode_trains_and_exports_a_plain_transformers_classifier(
    tiny_auto_checkpoints, synthetic_root, tmp_path, name, mode
):
    out = tmp_path / "run"
    assert run(tiny_auto_checkpoints[name], synthetic_root, out, mode, MODES[mode]) == 0
    for file in (
        "recipe.yaml",
        "metrics.json",
        "report.md",
        "model/config.json",
        "model/model.safetensors",
        "model/preprocessor_config.json",
        "predictions/test.npz",
    ):
        assert (out / file).is_file(), file
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    model = AutoModelForAudioClassification.from_pretrained(out / "model")  # plain transformers, no finetune class
    assert type(model).__name__ == NATIVE[name]
    if mode == "full":
        assert model.config.num_hidden_layers == 1
    if mode == "probe":  # the sweep covers the embeddings and both layers; the export is cut at the best
        assert sorted(metrics["validation"]["probe_layer_scores"]) == ["0", "1", "2"]
        assert model.config.num_hidden_layers == metrics["validation"]["probe_layer"]
    classify = pipeline("audio-classification", model=str(out / "model"))
    wave = (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)
    scores = classify(wave, top_k=len(CLASSES))
    assert {s["label"] for s in scores} == set(CLASSES) and sum(s["score"] for s in scores) == pytest.approx(
        1, abs=1e-4
    )
    if mode == "lora":
        check_lora_trained_adapters_and_head_only(
            out, LORA_TARGETS.get(name, {"q_proj", "k_proj", "v_proj", "out_proj"})
        )


def check_lora_trained_adapters_and_head_only(out, targets):
    """The model the run built trains adapters in the attention projections and the head; in its
    checkpoint every other weight is still the pretrained one."""
    recipe = recipes.load(str(out / "recipe.yaml"), [])
    model = build_model(recipe, list(CLASSES), False).model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_" in n}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters} == targets
    assert {n.split(".")[0] for n in trainable - adapters} == set(HEAD)
    trained = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    for key, pretrained in model.state_dict().items():
        if ".lora_" not in key and not key.startswith(HEAD):
            assert torch.equal(trained[key], pretrained), key
    assert all(trained[n].abs().sum() > 0 for n in adapters if "lora_B" in n)  # B starts at zero


@pytest.mark.slow
def test_lp_ft_fits_the_head_on_frozen_embeddings_first(
    tiny_auto_checkpoints, synthetic_root, finetune_cache, tmp_path
):
    out = tmp_path / "run"
    assert run(tiny_auto_checkpoints["whisper"], synthetic_root, out, "full", "backbone.head_init=probe") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "start_point" in metrics["validation"]  # the probe-fitted start, evaluated before step 1
    assert list((finetune_cache / "embeddings").glob("*whisper*"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NATIVE))
def test_layer_features_are_what_the_model_cut_after_that_layer_gives(tiny_auto_checkpoints, name):
    """The probe's per-layer features (masked mean over frames, through the final norm or SEW's
    upsampling) give the logits of the model cut after that layer, so a probe export is exact."""
    full = build(tiny_auto_checkpoints[name], mode="probe")
    model = full.model.eval()
    inputs = batch(full)
    family = auto_family(model.config.to_dict())
    with torch.no_grad():
        features = family.layer_features(model, inputs[model.main_input_name], inputs.get("attention_mask"))
    assert features.shape == (2, 3, 32)
    for layer in range(3):
        cut = build(tiny_auto_checkpoints[name], layer=str(layer)).model.eval()
        with torch.no_grad():
            assert torch.allclose(cut(**inputs).logits, family.head(cut, features[:, layer]), atol=1e-5)


def test_lora_targets_are_the_attention_projections_of_every_audio_classifier():
    """Every audio classifier transformers has, as a meta skeleton whose Linear layers all count as called."""
    expected = {
        "audio-spectrogram-transformer": ["k_proj", "o_proj", "q_proj", "v_proj"],
        "sew-d": ["attention.output.dense", "key_proj", "query_proj", "value_proj"],  # `dense` is in FFNs too
        "wav2vec2-bert": ["linear_k", "linear_out", "linear_q", "linear_v"],
        "wav2vec2-conformer": ["linear_k", "linear_out", "linear_pos", "linear_q", "linear_v"],
    }
    for model_type in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES:  # WavLM: not its position gate
        config = AutoConfig.for_model(model_type)
        with torch.device("meta"):
            model = AutoModelForAudioClassification.from_config(config)
        base = base_model_of(model)
        called = {name for name, module in base.named_modules() if isinstance(module, torch.nn.Linear)}
        found = default_targets(base, find_layers(base), called, config.hidden_size)
        assert found == expected.get(model_type, ["k_proj", "out_proj", "q_proj", "v_proj"]), model_type


def test_named_model_types_are_built_by_their_family(tiny_backbones):
    for name in ("hubert", "wav2vec2", "ast"):
        config = json.loads((tiny_backbones[name] / "config.json").read_text())
        assert auto_family(config).name == name
    mert = build_auto(3, ["a", "b", "c"], False, BackboneConfig(path=str(tiny_backbones["mert"])), LoraConfig())
    assert type(mert.model) is HubertForSequenceClassification and mert.sample_rate == 24000


@pytest.mark.slow
def test_what_auto_cannot_build_fails_in_one_line(tiny_auto_checkpoints, synthetic_root, tmp_path, capsys):
    for config in (
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        GPT2Config(n_embd=32, n_layer=1, n_head=2),
    ):
        folder = tmp_path / config.model_type
        config.save_pretrained(folder)
        assert run(folder, synthetic_root, tmp_path / "run", "full") == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and f"'{config.model_type}'" in error and "wavlm, whisper" in error
    assert main(["--recipe", "demo", "model.name=auto", "model.args={}", "--dry-run"]) == 2
    assert "backbone.path" in capsys.readouterr().err
    with pytest.raises(ValueError, match="attention pooling is for"):
        build(tiny_auto_checkpoints["wavlm"], pooling="attention")


@pytest.mark.slow
def test_layer_decay_follows_the_layers_auto_finds(tiny_auto_checkpoints):
    """Whisper keeps its body under `encoder`, not its base_model_prefix: layer k of 2 still gets
    lr x decay^(1-k), the rest of the body lr x decay^2, the head train.head_lr."""
    recipe = recipes.load(
        "demo",
        [
            "model.name=auto",
            "model.args={}",
            f"backbone.path={tiny_auto_checkpoints['whisper']}",
            "train.lr=1e-4",
            "train.head_lr=1e-3",
            "train.layer_decay=0.5",
        ],
    )
    model = build(tiny_auto_checkpoints["whisper"]).model
    rates = learning_rates(recipe, model)
    assert rates["classifier.weight"] == rates["projector.bias"] == pytest.approx(1e-3)
    assert rates["encoder.layers.1.self_attn.q_proj.weight"] == pytest.approx(1e-4)
    assert rates["encoder.layers.0.self_attn.q_proj.weight"] == pytest.approx(0.5e-4)
    assert rates["encoder.conv1.weight"] == pytest.approx(0.25e-4)
