"""Model cards are made and read by huggingface_hub's card classes: the metadata a Hub model page
reads (model-index with the run's test results, datasets, licence, pipeline tag) parses back with
the same library into the run's own numbers, and passes the library's own validation."""

import json
import math

import pytest
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

import finetune
from finetune import export, metrics, recipe as recipes

TAGS = {str(i): t for i, t in enumerate(["guitar", "rock", "piano", "drums"])}
TAGGER = {"model_type": "hubert", "id2label": TAGS, "problem_type": "multi_label_classification"}
GENRES = {
    "model_type": "finetune_simple_cnn",
    "id2label": {"0": "blues", "1": "jazz"},
    "problem_type": "single_label_classification",
}


def reported(test: dict) -> dict:
    """The registered scores (not counts) a split's metrics hold, with finite values: the model-index's."""
    return {
        m.name: test[m.name]
        for m in metrics.METRICS
        if m.higher_is_better is not None and isinstance(test.get(m.name), float) and math.isfinite(test[m.name])
    }


def check_round_trip(data: ModelCardData) -> None:
    """huggingface_hub accepts the metadata: it rebuilds the same card data and the same results."""
    as_dict = data.to_dict()
    assert ModelCardData(**as_dict).to_dict() == as_dict
    name, results = model_index_to_eval_results(as_dict["model-index"])
    assert name == data.model_name and results == data.eval_results


@pytest.mark.slow
def test_an_exported_card_parses_back_into_the_runs_test_results(demo_run, tmp_path):
    folder = export.export_run(demo_run, tmp_path / "export")
    card = ModelCard.load(folder / "README.md")
    test = json.loads((demo_run / "metrics.json").read_text())["test"]
    expected = reported(test)
    assert {"accuracy", "macro_f1", "macro_precision", "macro_recall", "top3_accuracy", "loss"} <= set(expected)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == expected  # num_tracks is a count
    for result in card.data.eval_results:
        assert (result.task_type, result.dataset_type, result.dataset_name, result.dataset_split) == (
            "audio-classification",
            "synthetic",
            "synthetic",
            "test",
        )
        assert result.dataset_args == {"split_scheme": "random"}
        assert result.metric_name == metrics.named(result.metric_type).label
    assert card.data.license == "mit" and card.data.pipeline_tag == "audio-classification"
    assert card.data.datasets == ["synthetic"] and card.data.library_name == "finetune"
    assert card.data.metrics == list(expected) and card.data.model_name == "demo"
    check_round_trip(card.data)
    assert "| Accuracy |" in card.text and "## Usage" in card.text  # the body is kept
    assert f"## Software\n- finetune {finetune.__version__}\n" in card.text  # what made it, on every card


def test_a_tagging_card_holds_every_score_its_licence_base_and_dataset():
    recipe = recipes.load("mert_mtat", ["data.root=/data", "data.tags=4"])
    test = {
        "roc_auc_macro": 0.91,
        "pr_auc_macro": 0.42,
        "roc_auc_micro": 0.93,
        "precision_at_3": 0.5,
        "recall_at_3": float("nan"),
        "num_tracks": 4332,
        "per_tag": {"rock": {"roc_auc": 0.9}},
    }
    data = ModelCard(export.model_card(recipe, test, TAGGER)).data
    assert {r.metric_type: r.metric_value for r in data.eval_results} == reported(test)
    assert "recall_at_3" not in data.metrics  # no score (NaN) is no result
    assert data.base_model == "m-a-p/MERT-v1-95M" and data.license == "cc-by-nc-4.0"
    assert data.datasets == ["MagnaTagATune"] and "music-tagging" in data.tags
    assert data.library_name == "transformers"
    check_round_trip(data)


def test_a_partial_test_split_is_stated_in_the_results_split_args():
    recipe = recipes.from_dict({"name": "cnn_gtzan", "data": {"name": "gtzan", "allow_missing": True}})
    data = ModelCard(export.model_card(recipe, {"accuracy": 0.7, "num_tracks": 20}, GENRES)).data
    assert data.eval_results[0].dataset_args == {
        "split_scheme": "standard",
        "partial": "tested on 20 tracks; the published test split has 290",
    }
    folds = recipes.load("cnn_gtzan", ["data.root=/data", "data.folds=4", "data.fold=2"])
    data = ModelCard(export.model_card(folds, {"accuracy": 0.7}, GENRES)).data
    assert data.eval_results[0].dataset_args["cross_validation"] == "4-fold, fold 2"


def test_a_run_without_test_scores_has_no_model_index():
    data = ModelCard(export.model_card(recipes.load("cnn_gtzan", ["data.root=/data"]), {}, GENRES)).data
    assert data.eval_results is None and "model-index" not in data.to_dict() and data.license == "mit"


def test_an_adapter_card_is_huggingface_hubs_too():
    recipe = recipes.load("mert_gtzan", ["data.root=/data", "backbone.mode=lora"])
    data = ModelCard(export.adapter_card(recipe, {"accuracy": 0.7, "macro_f1": 0.6})).data
    assert data.library_name == "peft" and data.base_model == "m-a-p/MERT-v1-95M" and "lora" in data.tags
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"accuracy": 0.7, "macro_f1": 0.6}
    check_round_trip(data)


def test_software_lines_are_one_argument_away():
    recipe = recipes.load("cnn_gtzan", ["data.root=/data"])
    card = ModelCard(export.model_card(recipe, {"accuracy": 0.7}, GENRES, software=["my-encoder 1.2.0 (plug-in)"]))
    assert "## Software\n- my-encoder 1.2.0 (plug-in)\n" in card.text
    assert "## Software" not in export.model_card(recipe, {"accuracy": 0.7}, GENRES)
