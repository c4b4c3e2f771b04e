"""Training budgets that hold at any dataset size: crops per track, planned steps and their
warning, and the learning rates of head, body and layers."""

import logging
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainingArguments

from backbone_fixtures import build_tiny, one_torch_thread, tiny_backbones  # noqa: F401  fixtures
from finetune import recipe as recipes
from finetune.clips import CropReader, TrainCrops, crops_per_track
from finetune.models import head_names
from finetune.run import FEW_STEPS, learning_rates, planned_steps, warn_if_few_steps
from finetune.training import FinetuneTrainer


def test_an_epoch_covers_the_training_audio():
    assert crops_per_track([30.0, 29.1, 8.0, 1.0], 3.0).tolist() == [10, 10, 3, 1]  # at least one crop
    assert crops_per_track([30.0, 8.0], 3.0, setting=4).tolist() == [4, 4]


def test_every_track_gives_its_crops_each_epoch(synthetic_root):
    paths = sorted(str(p) for p in (Path(synthetic_root) / "genres").rglob("*.wav"))[:3]
    crops = np.array([1, 3, 2])
    dataset = TrainCrops(paths, np.arange(3), CropReader(16000, 1.0), seed=0, crops=crops)
    assert len(dataset) == 6
    items = [dataset[i] for i in range(len(dataset))]
    assert np.bincount([item["track_index"] for item in items]).tolist() == crops.tolist()
    assert all(item["input_values"].shape == (16000,) for item in items)
    same_track = [item["input_values"] for item in items if item["track_index"] == 1]
    assert not np.array_equal(same_track[0], same_track[1])  # different random crops of one track


GTZAN_RECIPES = [
    "cnn_gtzan",
    "deep_cnn_gtzan",
    "lstm_gtzan",
    "gru_gtzan",
    "cnn_lstm_gtzan",
    "samplecnn_gtzan",
    "musicnn_pretrained_gtzan",
    "mert_gtzan",
    "ast_gtzan",
    "wav2vec2_gtzan",
    "hubert_gtzan",
]


@pytest.mark.parametrize("name", GTZAN_RECIPES)
def test_packaged_recipes_train_for_hundreds_of_steps_on_forty_tracks(name):
    """40 training tracks of 30 s (four per genre, as the shared real clips), the recipe as packaged."""
    recipe = recipes.load(name, ["data.root=/data"])
    crops = crops_per_track([30.0] * 40, recipe.data.clip_seconds, recipe.data.crops_per_track)
    train_set = TrainCrops([f"t{i}" for i in range(40)], np.zeros(40), reader=None, crops=crops)
    assert planned_steps(recipe, train_set, processes=1) >= FEW_STEPS


def test_a_run_of_few_steps_is_warned_about(caplog):
    recipe = recipes.load("demo", ["train.epochs=2", "train.batch_size=16"])
    train_set = TrainCrops([f"t{i}" for i in range(20)], np.zeros(20), reader=None, crops=np.full(20, 3))
    with caplog.at_level(logging.INFO, logger="finetune"):
        warn_if_few_steps(recipe, train_set, processes=2)
    assert planned_steps(recipe, train_set, processes=2) == 2 * (60 // 32)
    assert "trains for only 2 optimizer steps" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="finetune"):
        warn_if_few_steps(recipes.load("demo", ["train.max_steps=5"]), train_set, processes=1)
    assert "trains for only" not in caplog.text  # a step budget the user chose is not second-guessed


def test_head_body_and_layers_get_their_own_learning_rates(tiny_backbones, tmp_path):
    """train.head_lr for the head and the layer weights, train.lr x layer_decay^(L-1-k) for layer k
    of L, lr x layer_decay^L for the rest of the body; the optimizer's groups carry exactly these."""
    recipe = recipes.load(
        "mert_gtzan", ["data.root=/data", "train.lr=1e-4", "train.head_lr=1e-3", "train.layer_decay=0.5"]
    )
    model = build_tiny(tiny_backbones, "mert", layer="weighted").model  # 2 layers, weighted sum
    rates = learning_rates(recipe, model)
    assert set(head_names(model)) == {"projector", "classifier"}
    assert rates["layer_weights"] == rates["classifier.weight"] == rates["projector.bias"] == pytest.approx(1e-3)
    assert rates["hubert.encoder.layers.1.attention.q_proj.weight"] == pytest.approx(1e-4)  # the top layer
    assert rates["hubert.encoder.layers.0.attention.q_proj.weight"] == pytest.approx(0.5e-4)
    assert rates["hubert.feature_projection.projection.weight"] == pytest.approx(0.25e-4)
    trainer = FinetuneTrainer(
        model=model,
        args=TrainingArguments(str(tmp_path), learning_rate=1e-4, use_cpu=True, weight_decay=0.1, report_to="none"),
        multi_label=False,
        learning_rates=rates,
    )
    optimizer = trainer.create_optimizer()
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert group_of[id(param)]["lr"] == pytest.approx(rates[name]), name
    assert group_of[id(model.classifier.bias)]["weight_decay"] == 0.0  # biases are not decayed
    assert group_of[id(model.classifier.weight)]["weight_decay"] == pytest.approx(0.1)
