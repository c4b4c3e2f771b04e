"""Exports of pretrained-backbone runs: every backbone's merged folder (and a tagging run's) scores
like our predictor through a plain transformers pipeline; a LoRA run's adapter, layer weights
included, exports alone and loads back; a run that does not merge still predicts from its folder."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from backbone_fixtures import TAGS, TINY_GTZAN, one_torch_thread, tiny_backbones, tiny_gtzan, tiny_mtat  # noqa: F401  fixtures
from finetune import export, recipe as recipes
from finetune.backbones.lora import OWN_PARAMETERS_FILE, load_adapter
from finetune.cli import main
from finetune.models import build_model, load_model
from finetune.predict import Predictor

# case -> (recipe, tagging, overrides): every backbone, LoRA merged and not, one tagging run.
CASES = {
    "mert": ("mert_gtzan", False, ("backbone.mode=lora", "backbone.layer=weighted", "lora.merge_on_export=false")),
    "ast": ("ast_gtzan", False, ("backbone.mode=full", "model.args.max_length=100")),  # 1 s = 100 frames
    "hubert": ("hubert_gtzan", False, ("backbone.mode=lora", "backbone.layer=1")),
    "wav2vec2": ("wav2vec2_gtzan", False, ("backbone.mode=lora", "backbone.layer=1")),
    "mert-tags": ("mert_mtat", True, (f"data.tags={len(TAGS)}",)),  # as packaged: LoRA, weighted layers
}


@pytest.fixture(scope="module")
def runs(tiny_backbones, tiny_gtzan, tiny_mtat, tmp_path_factory):
    """case -> its run folder: 2 steps through the CLI, the first time a test asks for it."""
    folders = {}

    def run_folder(case: str):
        if case not in folders:
            recipe, tagging, extra = CASES[case]
            out = tmp_path_factory.mktemp(case) / "run"
            data = [f"data.root={tiny_mtat}"] if tagging else [f"data.root={tiny_gtzan}", *TINY_GTZAN]
            assert (
                main(
                    [
                        "--recipe",
                        recipe,
                        f"backbone.path={tiny_backbones[case.split('-')[0]]}",
                        *data,
                        "data.clip_seconds=1.0",
                        "data.num_workers=0",
                        "train.max_steps=2",
                        "train.batch_size=4",
                        f"output_dir={out}",
                        *extra,
                    ]
                )
                == 0
            )
            folders[case] = out
        return folders[case]

    return run_folder


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_exported_folder_scores_the_same_in_a_transformers_pipeline(runs, case, tmp_path):
    from transformers import pipeline

    folder = export.export_run(runs(case), tmp_path / "export")
    ours = Predictor.from_pretrained(folder)
    rate, count = ours.sample_rate, len(ours.label_names)
    wave = (0.1 * np.sin(np.arange(rate) / 7.0)).astype(np.float32)  # 1 s = one window
    every = {"threshold": 0.0} if ours.multi_label else {"top_k": count}  # all labels, tags or genres
    mine = {s["label"]: s["score"] for s in ours.predict(wave, sr=rate, **every)["labels"]}
    theirs = {s["label"]: s["score"] for s in pipeline("audio-classification", model=str(folder))(wave, top_k=count)}
    assert set(theirs) == set(mine) == set(ours.label_names)
    np.testing.assert_allclose([theirs[k] for k in mine], list(mine.values()), atol=1e-4)
    assert ours.multi_label == CASES[case][1]
    if ours.multi_label:  # a sigmoid per tag (the pipeline's choice for this problem_type), no softmax
        assert abs(sum(mine.values()) - 1.0) > 0.1


@pytest.mark.slow
def test_a_run_that_does_not_merge_keeps_a_merged_model_with_its_card_and_predicts(runs):
    run = runs("mert")  # lora.merge_on_export=false, weighted layers
    assert not [k for k in load_file(str(run / "model" / "model.safetensors")) if "lora" in k]
    assert {"adapter_config.json", "adapter_model.safetensors", OWN_PARAMETERS_FILE, "README.md"} <= {
        p.name for p in (run / "adapter").iterdir()
    }
    assert "load_adapter" in (run / "adapter" / "README.md").read_text()
    results = ModelCard.load(run / "model" / "README.md").data.eval_results
    test_accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    values = {r.metric_type: r.metric_value for r in results}
    assert values["accuracy"] == pytest.approx(test_accuracy, abs=1e-4)
    result = Predictor.from_pretrained(run).predict(
        np.full(3 * 24000, 0.01, dtype=np.float32), sr=24000, top_k=2, per_window=True
    )
    assert len(result["labels"]) == 2 and len(result["windows"]) == 3  # 1 s windows


@pytest.mark.slow
@pytest.mark.parametrize("case", ["wav2vec2", "mert", "mert-tags"])
def test_adapter_only_export_loads_back_with_equal_logits(runs, case, tmp_path):
    run = runs(case)
    folder = export.export_run(run, tmp_path / "adapter", adapter_only=True)
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "preprocessor_config.json"} <= files
    assert (OWN_PARAMETERS_FILE in files) == (case != "wav2vec2")  # the layer weights of weighted runs
    assert ModelCard.load(folder / "README.md").data.library_name == "peft"
    merged = load_model(run / "model")
    config = merged.model.config
    recipe = recipes.load(str(run / "recipe.yaml"), ["backbone.mode=full"])
    labels = [config.id2label[i] for i in range(config.num_labels)]
    base = build_model(recipe, labels, config.problem_type == "multi_label_classification").model
    restored = load_adapter(base, folder).eval()
    waves = list(np.random.default_rng(0).standard_normal((2, merged.sample_rate)).astype(np.float32) * 0.1)
    inputs = merged.feature_extractor(waves, sampling_rate=merged.sample_rate, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(restored(**inputs).logits, merged.model(**inputs).logits, atol=1e-4)


@pytest.mark.slow
def test_adapter_only_refuses_a_run_without_adapters(demo_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        export.export_run(demo_run, tmp_path / "x", adapter_only=True)
