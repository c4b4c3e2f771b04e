"""Every baseline: shapes at several lengths, labels, save/load, gradients and a learning test."""

import dataclasses
import inspect
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2FeatureExtractor

from baselines import BASELINE_BUILDERS, MODEL_CLASSES
from baselines.common import FRONTEND_NORMS, SpectrogramModel
from baselines.loading import start_model
from baselines.simple_cnn import SimpleCNNConfig, SimpleCNNModel
from finetune import recipe as recipes
from finetune.checks import check_recipe
from finetune.features import FRONTENDS
from finetune.models import load_model
from finetune.recipe import BackboneConfig

SR = 16000
CONVS = (torch.nn.Conv1d, torch.nn.Conv2d)

# Tiny instances that keep each model's real code path.
TINY = {
    "simple_cnn": dict(n_mels=32, channels=(4, 8, 8, 8)),
    "fcn": dict(n_mels=32, channels=(4, 8, 8, 8, 8)),
    "deep_cnn": dict(n_mels=32, channels=8, num_blocks=3),
    "musicnn": dict(n_mels=32, timbral_channels=8, temporal_channels=4, backend_channels=8, hidden_units=16),
    "lstm": dict(n_mels=32, hidden_size=16, num_layers=2),
    "gru": dict(n_mels=32, hidden_size=16, num_layers=1),
    "cnn_lstm": dict(n_mels=32, channels=(4, 8), hidden_size=16),
    "crnn": dict(n_mels=32, channels=(4, 8, 8, 8), rnn_hidden=16),
    "samplecnn": dict(channels=(8, 8, 8, 16, 16)),
}
NAMES = sorted(TINY)
SPECTROGRAM_NAMES = [name for name in NAMES if issubclass(MODEL_CLASSES[name], SpectrogramModel)]
LABELS = ["blues", "classical", "jazz", "metal"]


def build(name: str, multi_label: bool = False, labels=LABELS, path=None, **extra):
    backbone = BackboneConfig(path=None if path is None else str(path))
    args = {**TINY[name], **extra}
    return BASELINE_BUILDERS[name](len(labels), list(labels), multi_label, backbone, **args)


def tone_clips(seconds: float = 1.0, seed: int = 0):
    """Eight clips, two per class: a tone an octave above the previous class, jittered, in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    clips, labels = [], []
    for label in range(4):
        for _ in range(2):
            freq = 300 * 2**label * rng.uniform(0.95, 1.05)
            tone = rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
            clips.append(tone + 0.02 * rng.standard_normal(t.size))
            labels.append(label)
    return torch.tensor(np.stack(clips), dtype=torch.float32), torch.tensor(labels)


def test_every_baseline_is_registered_and_tested():
    assert set(BASELINE_BUILDERS) == set(MODEL_CLASSES) == set(TINY)


@pytest.mark.parametrize("name", NAMES)
def test_builder_arguments_are_config_fields(name):
    """Every model argument of a builder lands in the saved config (none silently dropped)."""
    params = list(inspect.signature(BASELINE_BUILDERS[name]).parameters)
    assert params[:4] == ["num_labels", "label_names", "multi_label", "backbone"]
    fields = {f.name for f in dataclasses.fields(MODEL_CLASSES[name].config_class)}
    assert set(params[4:]) <= fields
    assert "sample_rate" in params
    with pytest.raises(TypeError, match="unexpected keyword|no field"):
        build(name, no_such_option=1)


@pytest.mark.slow
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_for_any_length(name, multi_label):
    bundle = build(name, multi_label)
    model = bundle.model.eval()
    assert bundle.sample_rate == SR and bundle.feature_extractor.sampling_rate == SR
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {label: i for i, label in enumerate(LABELS)}
    assert model.config.problem_type == ("multi_label_classification" if multi_label else "single_label_classification")
    for seconds in (1.0, 3.0, 5.3):
        waves = [np.random.default_rng(0).standard_normal(int(SR * seconds)).astype(np.float32)] * 3
        inputs = bundle.feature_extractor(waves, sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            out = model(**inputs)
        assert out.logits.shape == (3, len(LABELS))
        assert out.loss is None
        assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(name, tmp_path):
    bundle = build(name, multi_label=True)
    bundle.model.save_pretrained(tmp_path)
    bundle.feature_extractor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_model(tmp_path)
    assert type(loaded.model) is type(bundle.model)
    assert loaded.sample_rate == SR
    assert loaded.model.config.problem_type == "multi_label_classification"
    x = torch.randn(2, SR)
    with torch.no_grad():
        assert torch.equal(bundle.model.eval()(x).logits, loaded.model(x).logits)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = build(name).model.train()
    x = torch.randn(4, 5 * SR)  # 5 s: the CRNN's GRU sees 3 steps
    model(input_values=x).logits.square().sum().backward()
    # A conv bias right before batch norm gets no gradient in training mode: norm removes it.
    before_norm = {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, CONVS)}
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert param_name in before_norm or param.grad.abs().sum() > 0, param_name


def test_saved_folder_restarts_training_with_a_new_head(tmp_path):
    build("simple_cnn").model.save_pretrained(tmp_path)
    reordered = list(reversed(LABELS))
    same_labels = build("simple_cnn", labels=reordered, path=tmp_path).model
    saved = build("simple_cnn", path=tmp_path).model
    # Same names in another order: the head rows follow their names.
    assert torch.equal(same_labels.classifier.weight, saved.classifier.weight.flip(0))
    assert same_labels.config.id2label == dict(enumerate(reordered))
    new = build("simple_cnn", labels=["a", "b"], multi_label=True, path=tmp_path).model
    assert new.classifier.out_features == 2 and new.config.num_labels == 2
    assert torch.equal(new.frontend.norm.weight, saved.frontend.norm.weight)
    with pytest.raises(ValueError, match="'finetune_simple_cnn' model, not 'finetune_fcn'"):
        build("fcn", path=tmp_path)


def test_spec_augment_is_configured_and_only_trains():
    model = build("simple_cnn", freq_mask=4, time_mask=8, num_masks=2).model
    x = torch.randn(2, SR)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    spec = model.frontend.spec_augment
    assert (spec.freq_mask, spec.time_mask, spec.num_masks) == (4, 8, 2)
    model.frontend.train()
    torch.manual_seed(0)
    assert (model.frontend(x) == 0).any()


@pytest.mark.slow
@pytest.mark.parametrize("frontend", list(FRONTENDS))
@pytest.mark.parametrize("name", SPECTROGRAM_NAMES)
def test_every_front_end_feeds_every_spectrogram_model(name, frontend):
    """Layers sized by the frequency axis read the front end's height (n_mfcc, cqt_bins, n_fft // 2 + 1)."""
    model = build(name, frontend=frontend, n_mfcc=13, cqt_bins=48, n_fft=256, hop_length=128).model.eval()
    x = torch.randn(2, 3 * SR)
    with torch.no_grad():
        spec = model.frontend.represent(x)
        assert model(x).logits.shape == (2, len(LABELS))
    assert spec.shape == (2, model.frontend.bins, 3 * SR // 128 + 1)
    assert model.config.frontend == frontend


@pytest.mark.parametrize("norm", list(FRONTEND_NORMS))
def test_front_end_normalisations(norm):
    model = build("simple_cnn", frontend_norm=norm).model.train()
    x = torch.randn(3, SR)
    spec = model.frontend(x)  # (B, 1, F, T)
    if norm == "instance":
        assert torch.allclose(spec.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-4)
    if norm == "none":
        assert torch.equal(spec[:, 0], model.frontend.represent(x))
    with pytest.raises(ValueError, match="frontend_norm: 'layer' is not one of batch, instance, none"):
        build("simple_cnn", frontend_norm="layer")


def test_a_saved_learnable_front_end_keeps_its_trained_filterbank(tmp_path):
    bundle = build("simple_cnn", frontend="learnable")
    with torch.no_grad():
        bundle.model.frontend.transform.fb.mul_(1.5)
    bundle.model.save_pretrained(tmp_path)
    bundle.feature_extractor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).model
    assert loaded.config.frontend == "learnable"
    assert torch.equal(loaded.frontend.transform.fb, bundle.model.frontend.transform.fb)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_learns_generated_clips(name):
    """A tiny model fits eight one-second clips of four classes within 40 Adam steps."""
    torch.manual_seed(0)
    x, y = tone_clips()
    model = build(name).model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(input_values=x).logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    with torch.no_grad():
        accuracy = (model.eval()(x).logits.argmax(dim=1) == y).float().mean().item()
    assert accuracy >= 0.75


@pytest.mark.slow
def test_learns_multi_label_tone_mixtures():
    """BCE on tags: each clip holds two of four tones; the tiny CNN learns which."""
    torch.manual_seed(0)
    x, y = tone_clips()
    targets = torch.nn.functional.one_hot(y, 4).float()
    partner = torch.roll(torch.arange(8), 2)  # clips of the next class
    x = x + x[partner]
    targets = torch.clamp(targets + targets[partner], max=1.0)
    model = build("simple_cnn", multi_label=True).model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).logits, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.args.frontend=cqt", "model.args.cqt_bins=96"],
            "model.args.sample_rate: 16000 Hz is too low for the cqt front end of model 'simple_cnn': it needs at least "
            "16489 Hz for cqt_bins = 96 from 32.7032 Hz at 12 per octave (the top filter reaches 8244 Hz)",
        ),
        (
            ["model.args.frontend=stft", "model.args.f_max=9000"],
            "16000 Hz is too low for the stft front end of model 'simple_cnn': it needs at least 18000 Hz for STFT bins",
        ),
        (["model.args.frontend=mfcc", "data.sample_rate=50"], "for one STFT frame"),
    ],
)
def test_recipe_checks_cover_each_front_end(overrides, message):
    with pytest.raises(recipes.RecipeError, match=re.escape(message)):
        check_recipe(recipes.load("demo", overrides))
    check_recipe(recipes.load("demo", ["model.args.frontend=cqt", "model.args.cqt_bins=95"]))  # as librosa.cqt


def test_a_folder_saved_before_the_front_end_rename_loads_strictly(tmp_path):
    """Folders written before front ends were a setting keep the log-mel under frontend.logmel.: they load
    with every tensor in place (not a silently fresh front end), and save back under today's names."""
    model = SimpleCNNModel(SimpleCNNConfig(num_labels=3, n_mels=32, mel_htk=False, mel_norm="slaney")).eval()
    model.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False, sampling_rate=16000).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    old = {key.replace("frontend.transform.", "frontend.logmel."): value for key, value in state.items()}
    assert old != state
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    waveform = torch.randn(1, 16000)
    for loaded in (load_model(tmp_path).model, start_model(SimpleCNNModel, model.config, tmp_path)):
        assert loaded.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
        assert torch.equal(loaded(waveform).logits, model(waveform).logits)
    resaved = tmp_path / "resaved"
    load_model(tmp_path).model.save_pretrained(resaved)
    assert not any(key.startswith("frontend.logmel.") for key in load_file(resaved / "model.safetensors"))
