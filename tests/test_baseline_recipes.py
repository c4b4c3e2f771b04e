"""Every baseline recipe runs 2 steps through the CLI and writes its run folder, single-label on
the generated genres and multi-label on a generated MTAT-format folder."""

import json

import pytest

from baselines import BASELINE_BUILDERS
from finetune import recipe as recipes
from finetune.cli import main

BASELINE_MODELS = set(BASELINE_BUILDERS)  # the registry: a new baseline needs a recipe here
RECIPES = {name: recipes.load(name) for name in recipes.packaged_recipes()}
BASELINE_RECIPES = sorted(
    n for n, r in RECIPES.items() if r.model.name in BASELINE_MODELS and r.data.name != "synthetic"
)
# One recipe per model and task is enough to exercise every code path (FMA recipes reuse models).
# FMA and MTG-Jamendo recipes: their own tests (test_data_fma, test_data_jamendo) run them on their data
SMOKE_RECIPES = [n for n in BASELINE_RECIPES if RECIPES[n].data.name not in ("fma", "jamendo")]


def test_every_baseline_has_a_recipe():
    assert {RECIPES[n].model.name for n in SMOKE_RECIPES} == BASELINE_MODELS


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOKE_RECIPES)
def test_recipe_two_steps(name, tmp_path, synthetic_root, mtat_root, request):
    recipe = RECIPES[name]
    if recipe.data.name == "mtat":
        data = [f"data.root={mtat_root}", "data.tags=7"]
    else:
        data = [
            "data.name=synthetic",
            "data.split_scheme=random",
            f"data.root={synthetic_root}",
            "data.subset=null",
            "data.task=null",
        ]
    if recipe.backbone.path:
        pretrained = (
            request.getfixturevalue("realdata")
            / "pretrained"
            / "sota-music-tagging-models"
            / "mtat"
            / recipe.model.name
        )
        data.append(f"backbone.path={pretrained / 'best_model.pth'}")
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                name,
                "train.max_steps=2",
                "train.batch_size=4",
                "data.num_workers=0",
                "data.clip_seconds=3.0",
                "data.max_tracks=12",
                f"output_dir={run_dir}",
                *data,
            ]
        )
        == 0
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    key = "roc_auc_macro" if recipe.data.name == "mtat" else "accuracy"
    assert 0.0 <= metrics["test"][key] <= 1.0
    assert (run_dir / "model" / "model.safetensors").is_file()
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["problem_type"] == (
        "multi_label_classification" if recipe.data.name == "mtat" else "single_label_classification"
    )


@pytest.mark.slow
def test_pretrained_tagger_as_a_frozen_probe_trains_only_its_head(tmp_path, synthetic_root, realdata):
    """`backbone.mode=probe` on a baseline: the MTAT MusiCNN's weights and batch-norm statistics stay
    as imported, only the new genre head moves."""
    from safetensors.torch import load_file

    from baselines import MODEL_CLASSES, import_won_checkpoint
    from finetune.data import synthetic

    pth = realdata / "pretrained" / "sota-music-tagging-models" / "mtat" / "musicnn" / "best_model.pth"
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "musicnn_pretrained_gtzan",
                "backbone.mode=probe",
                f"backbone.path={pth}",
                "data.name=synthetic",
                "data.split_scheme=random",
                f"data.root={synthetic_root}",
                "train.max_steps=3",
                "train.batch_size=4",
                "train.lr=0.01",
                "data.num_workers=0",
                "data.clip_seconds=3.0",
                "data.max_tracks=12",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    trained = load_file(run_dir / "model" / "model.safetensors")
    imported = import_won_checkpoint(MODEL_CLASSES["musicnn"], pth).state_dict()
    for key, value in imported.items():
        if not key.startswith("classifier."):
            assert (trained[key] == value).all(), f"{key} moved in a frozen probe"
    assert trained["classifier.weight"].shape[0] == len(synthetic.CLASSES), "a fresh head for the generated genres"
