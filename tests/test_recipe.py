"""The recipe schema: packaged recipes resolve, overrides apply, bad keys and types fail clearly."""

import dataclasses
import logging
import typing

import pytest
import yaml

from finetune import recipe as recipes
from finetune.checks import check_recipe

REQUIRED_KEYS = [
    "output_dir",
    "seed",
    "data.name",
    "data.root",
    "train.epochs",
    "train.max_steps",
    "train.batch_size",
    "train.lr",
    "train.save_steps",
    "train.resume",
]


def schema_order(cls=recipes.Recipe, prefix=""):
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += schema_order(hints[f.name], prefix + f.name + ".")
    return keys


def flat_keys(values, prefix=""):
    keys = []
    for key, value in values.items():
        keys.append(prefix + key)
        if isinstance(value, dict) and key != "args":
            keys += flat_keys(value, prefix + key + ".")
    return keys


@pytest.mark.parametrize("name", list(recipes.packaged_recipes()))
def test_every_packaged_recipe_resolves_and_fits_its_builders(name, tmp_path):
    recipe = recipes.load(name)
    assert recipe.name == name
    overrides = [f"data.root={tmp_path}"]
    if recipe.backbone.path and recipe.backbone.path.endswith(".pth"):  # the user's copy of the weights
        (tmp_path / "best_model.pth").touch()
        overrides.append(f"backbone.path={tmp_path / 'best_model.pth'}")
    if recipe.backbone.encoder_weights:  # the user's converted copy of a plug-in's weights
        (tmp_path / "weights.safetensors").touch()
        overrides.append(f"backbone.encoder_weights={tmp_path / 'weights.safetensors'}")
    check_recipe(recipes.load(name, overrides))  # data options and model args, before any data
    path = recipes.packaged_recipes()[name]
    assert path.read_text().startswith("#"), "a recipe opens with a comment saying what it trains"
    assert recipes.first_line_comment(path)


@pytest.mark.parametrize("name", list(recipes.packaged_recipes()))
def test_packaged_recipes_keep_the_schema_key_order(name):
    values = yaml.safe_load(recipes.packaged_recipes()[name].read_text())
    order = schema_order()
    present = flat_keys(values)
    assert all(k in order for k in present), [k for k in present if k not in order]
    assert present == sorted(present, key=order.index)


def test_required_keys_exist_in_every_recipe():
    flat = flat_keys(recipes.Recipe().to_dict())
    assert set(REQUIRED_KEYS) <= set(flat)


def test_overrides_apply_with_types():
    recipe = recipes.load(
        "demo",
        [
            "train.lr=3e-4",
            "train.max_steps=2",
            "seed=7",
            "data.root=/tmp/x",
            "output_dir=/tmp/run",
            "train.resume=true",
        ],
    )
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.train.max_steps == 2 and recipe.seed == 7
    assert recipe.data.root == "/tmp/x" and recipe.output_dir == "/tmp/run"
    assert recipe.train.resume is True


def test_recipe_round_trips_through_yaml(tmp_path):
    recipe = recipes.load("demo", ["train.lr=0.01"])
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe.to_yaml())
    assert recipes.load(str(path)).to_dict() == {**recipe.to_dict(), "name": recipe.name}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key train.lrr: did you mean train.lr? (valid keys here: epochs"),
        ("trian.lr=1", "unknown key trian: did you mean train?"),
        ("max_steps=3", "unknown key max_steps: did you mean train.max_steps?"),
        ("data.splitscheme=random", "unknown key data.splitscheme: did you mean data.split_scheme?"),
        ("train.zzz=1", "unknown key train.zzz (valid keys here"),
        ("train.batch_size=big", "train.batch_size: expected an integer"),
        ("train.resume=maybe", "train.resume: expected true or false"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("backbone.mode=half", "backbone.mode: 'half' is not one of full, lora, probe"),
        ("data.name=imagenet", "data.name: 'imagenet' is not one of gtzan, mtat, fma, jamendo, synthetic"),
        ("model.name=resnet", "model.name: 'resnet' is not one of"),
        ("model.args.depth=3", "unknown key model.args.depth for model 'simple_cnn'"),
        ("data.tags=50", "data.tags does not apply to dataset 'synthetic'"),
        ("backbone.layer=middle", "backbone.layer"),
        ("train.lr", "is not key=value"),
        ("model.args.n_mels=abc", "model.args.n_mels: expected an integer"),
        ("model.args.f_max=loud", "model.args.f_max: expected float or null"),
        ("backbone.mode=lora", "lora applies to the pretrained backbones"),
        ("backbone.path=/no/such/best_model.pth", "backbone.path: /no/such/best_model.pth does not exist"),
        ("train.save_steps=3 train.eval_steps=2", "train.save_steps: 3 must be a multiple of train.eval_steps"),
        ("data.streaming=true train.max_steps=5 backbone.mode=probe", "data.streaming: the probe embeds"),
        ("data.audio_cache=maybe", "data.audio_cache: expected bool or null"),
        ("data.audio_cache_max_gib=-1", "data.audio_cache_max_gib: -1.0 is out of range; it must be at least 0"),
        # values that cannot work are refused before anything runs
        ("train.batch_size=0", "train.batch_size: 0 is out of range; it must be at least 1"),
        ("data.clip_seconds=0", "data.clip_seconds: 0.0 is out of range; it must be greater than 0"),
        ("train.epochs=-3", "train.epochs: -3.0 is out of range; it must be greater than 0"),
        ("augment.time_stretch=-1", "augment.time_stretch: -1.0 is out of range; it must be at least 0"),
        ("augment.probability=1.5", "augment.probability: 1.5 is out of range; it must be at least 0 and at most 1"),
        ("lora.dropout=1", "lora.dropout: 1.0 is out of range; it must be at least 0 and less than 1"),
        ("eval.durations=1,0", "eval.durations: 0.0 is out of range; it must be greater than 0"),
        ("probe.weight_decays=0.1,-1", "probe.weight_decays: -1.0 is out of range"),
        ("data.folds=2", "data.folds: 2 is out of range; it must be at least 3"),
        ("data.folds=4 data.fold=4", "data.fold: 4 is not a fold of data.folds=4"),
        ("train.layer_decay=1.5", "train.layer_decay: 1.5 is out of range; it must be greater than 0 and at most 1"),
        ("train.head_lr=0", "train.head_lr: 0.0 is out of range; it must be greater than 0"),
        # values that cannot run: not finite, or below what the front end or the model needs
        ("train.epochs=inf", "train.epochs: inf is not a finite number"),
        ("train.epochs=nan", "train.epochs: nan is not a finite number"),
        ("train.lr=.inf", "train.lr: inf is not a finite number"),
        ("data.clip_seconds=inf", "data.clip_seconds: inf is not a finite number"),
        ("augment.noise_snr_db=nan", "augment.noise_snr_db: nan is not a finite number"),  # no range of its own
        ("eval.durations=1,inf", "eval.durations: inf is not a finite number"),
        ("model.args.f_max=inf", "model.args.f_max: inf is not a finite number"),
        (
            "data.sample_rate=1",
            "data.sample_rate: 1 Hz is too low for the log-mel front end of model 'simple_cnn': "
            "it needs at least 86 Hz for one STFT frame",
        ),
        (
            "model.args.f_max=9000",
            "model.args.sample_rate: 16000 Hz is too low for the log-mel front end of model "
            "'simple_cnn': it needs at least 18000 Hz for mel bands up to f_max = 9000 Hz",
        ),
        ("model.name=mert data.sample_rate=16000", "data.sample_rate: model 'mert' has a fixed rate"),
    ],
)
def test_bad_overrides_fail_naming_the_key(override, message):
    with pytest.raises(recipes.RecipeError) as err:
        check_recipe(recipes.load("demo", override.split(" ")))
    assert message in str(err.value)


def test_unknown_recipe_lists_the_packaged_ones():
    with pytest.raises(recipes.RecipeError) as err:
        recipes.load("no_such_recipe")
    assert "demo" in str(err.value)


def test_real_dataset_without_root_asks_for_it():
    with pytest.raises(recipes.RecipeError, match="data.root"):
        check_recipe(recipes.load("demo", ["data.name=gtzan", "data.split_scheme=null"]))


def test_switching_the_dataset_drops_the_recipe_files_options_for_its_own(caplog):
    """A GTZAN recipe pointed at a folder: its split scheme goes (logged), what the user sets stays."""
    with caplog.at_level(logging.INFO, logger="finetune"):
        recipe = recipes.load("wav2vec2_gtzan", ["data.name=folder", "data.root=/music"])
    assert recipe.data.split_scheme is None and recipe.data.root == "/music"
    assert "data.split_scheme=" in caplog.text
    assert recipes.load("wav2vec2_gtzan", ["data.name=fma", "data.split_scheme=x"]).data.split_scheme == "x"
    assert recipes.load("wav2vec2_gtzan", ["data.split_scheme=random"]).data.split_scheme == "random"
    assert recipes.load("wav2vec2_gtzan", []).data.split_scheme is not None, "the file's own dataset keeps them"
