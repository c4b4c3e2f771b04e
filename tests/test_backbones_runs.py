"""Every backbone x mode x task for 2 steps through the real entry point, and the probe's cache."""

import json

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import ASTModel, HubertModel, Wav2Vec2Model

from backbone_fixtures import TAGS, TINY_GTZAN, one_torch_thread, tiny_backbones, tiny_gtzan, tiny_mtat  # noqa: F401  fixtures
from finetune.backbones import FAMILIES
from finetune.cli import main
from finetune.data.gtzan import GENRES
from finetune.evaluation import TrackPredictions
from finetune.models import load_model

RECIPES = {name: f"{name}_gtzan" for name in FAMILIES}  # every family has its GTZAN recipe
NATIVE = {
    "mert": "HubertForSequenceClassification",
    "hubert": "HubertForSequenceClassification",
    "wav2vec2": "Wav2Vec2ForSequenceClassification",
    "ast": "ASTForAudioClassification",
}
RUN_FILES = (
    "recipe.yaml",
    "metrics.json",
    "report.md",
    "report.html",
    "model/config.json",
    "model/model.safetensors",
    "model/preprocessor_config.json",
    "model/README.md",
    "predictions/validation.npz",
    "predictions/test.npz",
)


def run(name: str, mode: str, checkpoint, data_root, out, *extra) -> int:
    """`python -m finetune --recipe <name>_gtzan ...` in this process, on tiny weights and data
    (tiny GTZAN, or tiny MTAT for tagging)."""
    tagging = (data_root / "annotations_final.csv").is_file()
    data = ["data.name=mtat", "data.split_scheme=standard", f"data.tags={len(TAGS)}"] if tagging else TINY_GTZAN
    args = [
        "--recipe",
        RECIPES[name],
        f"backbone.path={checkpoint}",
        f"backbone.mode={mode}",
        f"data.root={data_root}",
        *data,
        "data.clip_seconds=1.0",
        "data.num_workers=0",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.eval_batch_size=16",
        f"output_dir={out}",
    ]
    if name == "ast":
        args.append("model.args.max_length=100")  # 1 s clips: the tiny AST's positions interpolated
    return main(args + list(extra))


@pytest.mark.slow
@pytest.mark.parametrize("multi_label", [False, True], ids=["genres", "tags"])
@pytest.mark.parametrize("mode", ["full", "lora", "probe"])
@pytest.mark.parametrize("name", list(RECIPES))
def test_two_steps_write_a_run_folder_that_loads(
    tiny_backbones, tiny_gtzan, tiny_mtat, tmp_path, name, mode, multi_label
):
    out = tmp_path / "run"
    layer = "weighted" if mode == "lora" else "last"  # LoRA runs also train the layer weights
    assert (
        run(name, mode, tiny_backbones[name], tiny_mtat if multi_label else tiny_gtzan, out, f"backbone.layer={layer}")
        == 0
    )
    for file in RUN_FILES:
        assert (out / file).is_file(), file
    metrics = json.loads((out / "metrics.json").read_text())
    key = "roc_auc_macro" if multi_label else "accuracy"
    assert 0.0 <= metrics["test"][key] <= 1.0 and 0.0 <= metrics["validation"][key] <= 1.0
    assert not [k for k in load_file(str(out / "model" / "model.safetensors")) if "lora" in k]
    bundle = load_model(out / "model")
    weighted_ast = (name, layer) == ("ast", "weighted")  # AST has no native weighted sum
    expected_class = "ASTPooledForAudioClassification" if weighted_ast else NATIVE[name]
    assert type(bundle.model).__name__ == expected_class
    assert bundle.model.config.problem_type == (
        "multi_label_classification" if multi_label else "single_label_classification"
    )
    wave = np.zeros(bundle.sample_rate, dtype=np.float32) + 0.01
    inputs = bundle.feature_extractor([wave], sampling_rate=bundle.sample_rate, return_tensors="pt")
    assert bundle.model(**inputs).logits.shape == (1, len(TAGS) if multi_label else len(GENRES))


def count_backbone_forwards() -> tuple[list, object]:
    """Count forward passes of any backbone (not of the probe heads), process-wide."""
    calls = []

    def hook(module, args, output):
        if isinstance(module, (HubertModel, Wav2Vec2Model, ASTModel)):
            calls.append(type(module).__name__)

    return calls, torch.nn.modules.module.register_module_forward_hook(hook)


@pytest.mark.slow
def test_probe_caches_embeddings_once_and_sweeps_every_layer(
    tiny_backbones, tiny_gtzan, finetune_cache, tmp_path, capsys, monkeypatch
):
    sweep = ("probe.layers=all", "data.eval_hop_seconds=0.5", "probe.max_iter=20")  # windows no other run uses
    calls, handle = count_backbone_forwards()
    try:
        assert run("mert", "probe", tiny_backbones["mert"], tiny_gtzan, tmp_path / "first", *sweep) == 0
        first_calls = len(calls)
        cached = {p: p.stat().st_mtime_ns for p in (finetune_cache / "embeddings").rglob("*.npy")}
        calls.clear()
        # a Hub endpoint nobody answers (a closed local port): the upload fails after the run
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.setenv("HF_TOKEN", "hf_unused")
        assert (
            run(
                "mert",
                "probe",
                tiny_backbones["mert"],
                tiny_gtzan,
                tmp_path / "second",
                *sweep,
                "hub.push_to_hub=true",
                "hub.repo_id=someone/probe",
            )
            == 1
        )
    finally:
        handle.remove()
    assert first_calls > 0 and calls == [], "the second run reads the cache: no backbone forward pass"
    assert {p: p.stat().st_mtime_ns for p in (finetune_cache / "embeddings").rglob("*.npy")} == cached
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    scores = metrics["validation"]["probe_layer_scores"]
    assert sorted(scores) == ["0", "1", "2"]  # embeddings + 2 transformer layers
    best = metrics["validation"]["probe_layer"]
    assert metrics["validation"]["probe_metric"] == "loss" and scores[str(best)] == min(scores.values())
    assert "Probe layer sweep" in (tmp_path / "first" / "report.md").read_text()
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert second["test"]["accuracy"] == metrics["test"]["accuracy"]
    exported = load_model(tmp_path / "first" / "model")
    assert type(exported.model).__name__ == "HubertForSequenceClassification"
    assert exported.model.config.num_hidden_layers == best  # the backbone cut after the best layer
    test = TrackPredictions.load(tmp_path / "first" / "predictions" / "test.npz")
    assert len(test.ids) == len(GENRES) and test.probs.shape == (len(GENRES), len(GENRES))  # 1 test track each
    assert test.label_names == list(GENRES) and np.allclose(test.probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(test.probs.argmax(axis=1) == test.labels) == pytest.approx(metrics["test"]["accuracy"])
    # the second run was asked to push: exported to RUN/hub_export; the failed upload is one line
    assert (tmp_path / "second" / "hub_export" / "model.safetensors").is_file()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not push" in errors[0] and "someone/probe" in errors[0]
