"""Model cards are written from the resolved recipe: what trained, on which data and task, from
which weights under which licence, and how to load and score the model."""

import yaml
from huggingface_hub import ModelCard

from finetune import export, recipe as recipes

GENRES = {str(i): g for i, g in enumerate(["blues", "classical", "jazz"])}
TAGS = {str(i): t for i, t in enumerate(["guitar", "rock", "piano"])}


def card(recipe_name: str, overrides: list[str], config: dict, metrics: dict | None = None) -> tuple[dict, str]:
    parsed = ModelCard(
        export.model_card(recipes.load(recipe_name, ["data.root=/data", *overrides]), metrics or {}, config)
    )
    return parsed.data.to_dict(), parsed.text


def test_a_tagging_run_on_mtat_says_mtat_and_tagging_whatever_its_recipe_began_as():
    config = {
        "model_type": "hubert",
        "id2label": TAGS,
        "problem_type": "multi_label_classification",
        "clip_seconds": 5.0,
        "hop_seconds": 5.0,
        "aggregate": "mean",
    }
    meta, body = card(
        "mert_gtzan",
        ["name=mert_lora", "data.name=mtat", "data.split_scheme=standard", "backbone.mode=lora"],
        config,
        {"roc_auc_macro": 0.91},
    )
    assert "gtzan" not in (body + yaml.safe_dump(meta)).lower()  # the recipe's own description names GTZAN
    assert "MagnaTagATune" in body and "music tagging (3 tags)" in body and "LoRA adapters (rank 8)" in body
    assert "linear probe" in body  # head_init=probe, from the recipe
    assert meta["base_model"] == "m-a-p/MERT-v1-95M" and meta["license"] == "cc-by-nc-4.0"
    assert meta["datasets"] == ["MagnaTagATune"] and "music-tagging" in meta["tags"]
    assert 'pipeline("audio-classification"' in body
    assert "one pass" in body and "5 s windows every 5 s, mean over the windows" in body


def test_a_baseline_card_says_how_to_load_it_and_its_licence():
    config = {
        "model_type": "finetune_musicnn",
        "id2label": GENRES,
        "problem_type": "single_label_classification",
        "clip_seconds": 3.0,
        "hop_seconds": 1.5,
        "aggregate": "max",
    }
    meta, body = card(
        "musicnn_pretrained_gtzan", ["backbone.path=/weights/mtat/musicnn/best_model.pth"], config, {"accuracy": 0.7}
    )
    assert meta["library_name"] == "finetune" and meta["license"] == "mit" and "base_model" not in meta
    assert "Predictor.from_pretrained" in body and "pip install music-finetune" in body
    assert "3 s windows every 1.5 s, max over the windows" in body
    assert "music genre classification (3 genres) on GTZAN" in body and "| Accuracy | 0.7000 |" in body
    scratch_meta, scratch = card("cnn_gtzan", [], {**config, "model_type": "finetune_simple_cnn"})
    assert "`simple_cnn` trained from scratch" in scratch and scratch_meta["license"] == "mit"


def test_cross_validation_runs_say_which_fold():
    config = {"model_type": "finetune_simple_cnn", "id2label": GENRES, "problem_type": "single_label_classification"}
    _, body = card("cnn_gtzan", ["data.folds=4", "data.fold=2"], config)
    assert "4-fold cross-validation, fold 2" in body
