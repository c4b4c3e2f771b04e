"""Exports of pretrained-backbone runs: the merged folder scores like our predictor through a plain
transformers pipeline, and a LoRA run's adapter exports alone and loads with PeftModel."""

import numpy as np
import pytest
import torch
from backbone_fixtures import one_torch_thread, tiny_backbones, tiny_gtzan  # noqa: F401  fixtures

from finetune import hub
from finetune import recipe as recipes
from finetune.cli import main
from finetune.models import build_model, load_model
from finetune.predict import Predictor


@pytest.fixture(scope="module")
def lora_run(tiny_backbones, tiny_gtzan, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run") / "run"
    assert main(["--recipe", "wav2vec2_gtzan", f"backbone.path={tiny_backbones['wav2vec2']}",
                 "backbone.mode=lora", "backbone.layer=1", f"data.root={tiny_gtzan}",
                 "data.split_scheme=random", "data.clip_seconds=1.0", "data.num_workers=0",
                 "train.max_steps=2", "train.batch_size=4", f"output_dir={out}"]) == 0
    return out


def test_exported_folder_scores_the_same_in_a_transformers_pipeline(lora_run, tmp_path):
    from transformers import pipeline

    folder = hub.export(lora_run, tmp_path / "export")
    wave = (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32)  # 1 s at 16 kHz = one window
    ours = Predictor.from_pretrained(folder).predict(wave, sr=16000, top_k=3)["labels"]
    theirs = pipeline("audio-classification", model=str(folder))(wave, top_k=3)
    assert [s["label"] for s in theirs] == [s["label"] for s in ours]
    np.testing.assert_allclose([s["score"] for s in theirs], [s["score"] for s in ours], atol=1e-4)


def test_adapter_only_export_loads_with_peft(lora_run, tiny_backbones, tmp_path):
    from peft import PeftModel

    folder = hub.export(lora_run, tmp_path / "adapter", adapter_only=True)
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md",
            "preprocessor_config.json"} <= files
    assert "library_name: peft" in (folder / "README.md").read_text()
    merged = load_model(lora_run / "model").model
    recipe = recipes.load(str(lora_run / "recipe.yaml"), ["backbone.mode=full"])
    labels = [merged.config.id2label[i] for i in range(merged.config.num_labels)]
    base = build_model(recipe, labels, multi_label=False).model
    restored = PeftModel.from_pretrained(base, folder).eval()
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(restored(input_values=wave).logits, merged(input_values=wave).logits, atol=1e-4)


def test_adapter_only_refuses_a_run_without_adapters(demo_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        hub.export(demo_run, tmp_path / "x", adapter_only=True)
