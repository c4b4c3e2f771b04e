"""Dataset option values are checked against each dataset's choices before anything runs."""

import pytest

from finetune import recipe as recipes
from finetune.cli import main
from finetune.data import DATASET_BUILDERS, DATASET_CHOICES, DATASET_OPTIONS
from finetune.data.recipe_data import DATASET_OPTION_KEYS, dataset_arguments

CHOICE_OPTIONS = [(name, key) for name, choices in DATASET_CHOICES.items() for key in choices]


def data_recipe(name, **data):
    return recipes.from_dict({"data": {"name": name, "root": "/tmp", **data}})


def test_every_dataset_declares_its_choices():
    assert set(CHOICE_OPTIONS) == {
        ("gtzan", "split_scheme"),
        ("mtat", "split_scheme"),
        ("fma", "subset"),
        ("fma", "task"),
        ("jamendo", "subset"),
        ("synthetic", "split_scheme"),
    }
    for name, key in CHOICE_OPTIONS:
        assert key in DATASET_OPTIONS[name] and key in DATASET_OPTION_KEYS


@pytest.mark.parametrize("name, key", CHOICE_OPTIONS)
def test_a_bad_value_names_key_value_dataset_and_choices(name, key):
    choices = ", ".join(DATASET_CHOICES[name][key])
    message = f"data.{key}: 'tiny' is not a {key.replace('_', ' ')} of {name}; choose one of {choices}$"
    with pytest.raises(recipes.RecipeError, match=message):
        dataset_arguments(data_recipe(name, **{key: "tiny"}))
    for value in DATASET_CHOICES[name][key]:
        assert dataset_arguments(data_recipe(name, **{key: value}))[key] == value


@pytest.mark.parametrize("name, key", CHOICE_OPTIONS)
def test_the_builder_checks_the_same_choices(name, key, tmp_path):
    with pytest.raises(
        ValueError,
        match=f"{key}='tiny' is not valid; choose one of: {', '.join(repr(c) for c in DATASET_CHOICES[name][key])}$",
    ):
        DATASET_BUILDERS[name](tmp_path, **{key: "tiny"})
    assert not any(tmp_path.iterdir())  # checked before reading or generating anything


def test_dry_run_rejects_a_bad_choice(capsys):
    assert main(["--recipe", "cnn_gtzan", "data.root=/tmp", "data.split_scheme=pons", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: data.split_scheme: 'pons' is not a split scheme of gtzan; "
        "choose one of fault_filtered, stratified, random"
    )
