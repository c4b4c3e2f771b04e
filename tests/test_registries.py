"""One source per registry: dataset, backbone-family and baseline names come from one mapping each,
and every list of names (recipe choices, listings, error messages, licences, cards) agrees with it.
A dataset added in one module (and its registry entry) loads and is listed, with no other edit."""

import dataclasses
import importlib.util
import textwrap

import pytest

from baselines import BASELINE_BUILDERS, MODEL_CLASSES
from finetune import recipe as recipes
from finetune.backbones import AUTO, BACKBONE_BUILDERS, FAMILIES
from finetune.backbones.auto import NAMED
from finetune.data import (
    DATASET_BUILDERS,
    DATASET_CARDS,
    DATASET_CHOICES,
    DATASET_MODULES,
    DATASET_OPTIONS,
    known_multi_label,
    load_dataset,
)
from finetune.export import BASE_LICENSES, dataset_id, dataset_name, license_of
from finetune.model_options import MODEL_OPTIONS, OPTIONS_FILE, to_json
from finetune.models import check_model_args, model_builders, model_options
from finetune.published import split_key
from finetune.recipe import DATASET_KEYS, ENCODER, DataConfig, RecipeError

# Builder options a recipe never sets under data.*: the run's seed, data.streaming (how clips are
# drawn, not which dataset), and GTZAN's `genres` (for Python callers only).
NOT_DATASET_KEYS = {"seed", "streaming", "genres"}


def test_the_recipe_schema_agrees_with_the_dataset_registry():
    """recipe.py is a leaf (no import of finetune.data): its data.name choices and DATASET_KEYS are
    checked here against the registry instead."""
    (name,) = [f for f in dataclasses.fields(DataConfig) if f.name == "name"]
    assert name.metadata["choices"] == tuple(DATASET_MODULES)
    options = {key for name in DATASET_MODULES for key in DATASET_OPTIONS[name]}
    assert set(DATASET_KEYS) == {"root"} | (options - NOT_DATASET_KEYS)


def test_model_names_and_their_lists_come_from_the_registries():
    assert BACKBONE_BUILDERS == {name: family.build for name, family in FAMILIES.items()}
    assert all(family.name == name for name, family in FAMILIES.items())
    assert BASELINE_BUILDERS.keys() == MODEL_CLASSES.keys()
    assert model_builders().keys() == {*BASELINE_BUILDERS, *FAMILIES, AUTO, ENCODER}
    assert {family.name for family in NAMED.values()} == set(FAMILIES)  # auto detects every named family
    for name, family in FAMILIES.items():  # each family's own weights get its licence on a card
        recipe = recipes.load("demo", [f"model.name={name}", "model.args={}", f"backbone.path={family.default_path}"])
        assert license_of(recipe) == family.license == BASE_LICENSES[family.license_prefix]
    lora = recipes.load("demo", ["backbone.mode=lora"])
    with pytest.raises(RecipeError, match=f"pretrained backbones \\({', '.join([*FAMILIES, ENCODER, AUTO])}\\)"):
        check_model_args(lora)


def test_the_model_options_file_holds_every_builders_signature():
    """finetune/model_options.json, which checking a recipe and `finetune models` read instead of
    importing torch, is the builders' signatures: after adding or changing a model, rewrite it with
    `python -m finetune.models`."""
    assert MODEL_OPTIONS == model_options() and OPTIONS_FILE.read_text() == to_json(model_options()), (
        "finetune/model_options.json is stale: run python -m finetune.models"
    )
    assert list(MODEL_OPTIONS) == list(model_builders())


TONES_MODULE = '''
"""Tones: a throwaway dataset of generated sine WAVs, high or low, single-label."""

import numpy as np
import soundfile as sf

from finetune.data.common import Clip, DatasetCard, assemble, check_options, dataset_root

OPTION_CHOICES = {"pitch_set": ("two",)}
CARD = DatasetCard("example/tones", "the Tones set")
LABELS = ("high", "low")


def multi_label_task(**options) -> bool:
    return False


def build(root, pitch_set="two", allow_missing=False, streaming=False):
    check_options(OPTION_CHOICES, pitch_set=pitch_set)
    root = dataset_root("tones", root)
    splits = {}
    for split in ("train", "validation", "test"):
        splits[split] = []
        for index, label in enumerate(LABELS):
            t = np.arange(8000) / 8000
            sf.write(f"{root}/{split}-{label}.wav", np.sin(2 * np.pi * (880 if label == "high" else 220) * t), 8000)
            splits[split].append(Clip(f"{split}-{label}", f"{split}-{label}.wav", index))
    return assemble("tones", root, splits, LABELS, False, allow_missing, streaming=streaming)
'''


def test_a_dataset_added_in_one_module_loads_and_is_listed(tmp_path, monkeypatch):
    source = tmp_path / "tones.py"
    source.write_text(textwrap.dedent(TONES_MODULE))
    spec = importlib.util.spec_from_file_location("tones", source)
    tones = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tones)
    monkeypatch.setitem(DATASET_MODULES, "tones", tones)  # the one registry entry

    root = tmp_path / "audio"
    root.mkdir()
    data = load_dataset("tones", root)
    assert {split: len(data[split]) for split in data} == {"train": 2, "validation": 2, "test": 2}
    assert data["train"].features["label"].names == ["high", "low"]
    assert DATASET_BUILDERS["tones"] is tones.build and "tones" in list(DATASET_BUILDERS)
    assert DATASET_OPTIONS["tones"] == ("pitch_set", "allow_missing", "streaming")
    assert DATASET_CHOICES["tones"] == {"pitch_set": ("two",)}
    assert known_multi_label("tones", root=root) is False
    with pytest.raises(ValueError, match=f"choose one of: {', '.join(DATASET_MODULES)}$"):
        load_dataset("tone", root)
    with pytest.raises(ValueError, match="pitch_set"):
        load_dataset("tones", root, pitch_set="three")

    config = dataclasses.replace(DataConfig(), name="tones", root=str(root))  # the schema's choices are checked above
    assert dataset_id(config) == "example/tones" and dataset_name(config) == "the Tones set"
    recipe = dataclasses.replace(recipes.load("demo"), data=config)
    assert split_key(recipe) == "tones/official"
    assert DATASET_CARDS["tones"] is tones.CARD
