"""Mistakes refused with one line before any work (issue 19, part 4): a metric the task does not
report, a dataset that cannot train, non-finite or too low values, a precision this machine cannot
train in, options after overrides, and a model switched on the command line."""

import logging
import os
import subprocess
import sys

import pytest

from data_fixtures import write_audio
from finetune import recipe as recipes
from finetune.checks import check_metric
from finetune.cli import main
from finetune.machine import local_accelerator
from finetune.run import check_recipe
from finetune.training import precision_runs, runnable_precision


def refusal(tmp_path, *argv) -> str:
    """`python -m finetune ...` run in `tmp_path` with its own cache, expected to refuse: status 2,
    one line `error: ...`, no traceback, no run folder and no audio cache. Returns the line."""
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "finetune", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FINETUNE_CACHE": str(cache)},
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/*")), "no run folder is left"
    assert not (cache / "audio").exists(), "no audio is cached"
    return errors[0]


def folder_dataset(root, classes, per_class):
    for name in classes:
        for n in range(per_class):
            write_audio(root / name / f"{n}.wav", seconds=1.0, sample_rate=16000, seed=n)
    return root


# ---------------------------------------------------------------------------- train.metric


def test_a_metric_the_task_does_not_report_is_refused_before_any_data(tmp_path):
    line = refusal(tmp_path, "--recipe", "demo", "train.metric=roc_auc_macro", "train.max_steps=2")
    assert "train.metric: 'roc_auc_macro'" in line and "valid: loss, accuracy, macro_f1" in line
    assert not (tmp_path / "cache").exists(), "the demo's data is not even generated"


@pytest.mark.parametrize(
    "overrides, valid",
    [
        (["data.name=mtat", "data.root=/x", "train.metric=accuracy"], "roc_auc_macro, pr_auc_macro"),
        (["data.name=fma", "data.root=/x", "data.task=genres_all", "train.metric=macro_f1"], "roc_auc_macro"),
        (["data.name=fma", "data.root=/x", "train.metric=bogus"], "accuracy, macro_f1"),
    ],
)
def test_dry_run_checks_the_metric_where_the_dataset_tells_its_task(overrides, valid):
    with pytest.raises(recipes.RecipeError, match="train.metric") as err:
        check_recipe(recipes.load("demo", overrides))
    assert valid in str(err.value)


def test_the_metric_is_checked_against_the_indexed_label_count():
    """folder and hub datasets: their task and classes are known once indexed."""
    recipe = recipes.load("demo", ["data.name=folder", "data.root=/x", "train.metric=top5_accuracy"])
    check_recipe(recipe)  # unknown before indexing
    check_metric(recipe, multi_label=False, num_labels=6)
    with pytest.raises(
        recipes.RecipeError,
        match=r"'top5_accuracy' is not a validation metric of single-label "
        r"classification over 3 classes; valid: loss, accuracy",
    ):
        check_metric(recipe, multi_label=False, num_labels=3)


# ---------------------------------------------------------------------------- datasets that cannot train


@pytest.mark.slow
def test_a_dataset_of_one_class_is_refused_once_indexed(tmp_path):
    root = folder_dataset(tmp_path / "music", ["rock"], 6)
    line = refusal(
        tmp_path, "--recipe", "demo", "data.name=folder", f"data.root={root}", "train.max_steps=2", "data.num_workers=0"
    )
    assert f"data.root={root}: dataset 'folder' has 1 class to train on (rock); it needs at least 2" in line


@pytest.mark.slow
def test_a_split_left_without_tracks_is_refused_once_indexed(tmp_path):
    root = folder_dataset(tmp_path / "music", ["rock", "jazz"], 1)
    line = refusal(
        tmp_path, "--recipe", "demo", "data.name=folder", f"data.root={root}", "train.max_steps=2", "data.num_workers=0"
    )
    assert "the validation split of dataset 'folder' has no tracks (train 2, validation 0, test 0)" in line
    assert "data.split_ratios=" in line


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize("override", ["train.epochs=inf", "data.sample_rate=1"])
def test_absurd_values_are_refused_before_any_data(tmp_path, override):
    key = override.partition("=")[0]
    assert refusal(tmp_path, "--recipe", "demo", override).startswith(f"error: {key}: ")
    assert not (tmp_path / "cache").exists(), "the demo's data is not even generated"


def test_the_mel_filterbank_needs_twice_its_f_max():
    with pytest.raises(recipes.RecipeError, match="data.sample_rate: 11999 Hz is too low"):
        check_recipe(recipes.load("demo", ["data.sample_rate=11999", "model.args.f_max=6000"]))
    check_recipe(recipes.load("demo", ["data.sample_rate=12000", "model.args.f_max=6000"]))


# ---------------------------------------------------------------------------- precision


def test_precisions_by_device():
    assert precision_runs("fp32", "cpu") and precision_runs("bf16", "cpu")
    assert not precision_runs("fp16", "cpu"), "accelerate trains fp16 on a CPU in fp32"


@pytest.mark.skipif(local_accelerator() != "cpu", reason="the fallback of a CPU-only machine")
def test_a_precision_this_machine_cannot_train_in_falls_back_and_says_so(caplog):
    asked = recipes.load("demo", ["train.precision=fp16"])
    with caplog.at_level(logging.WARNING, logger="finetune"):
        ran = runnable_precision(asked)
    assert ran.train.precision == "fp32" and asked.train.precision == "fp16"
    assert ran.train.lr == asked.train.lr and ran.data == asked.data
    assert "train.precision=fp16 does not train on this machine (cpu)" in caplog.text
    bf16 = recipes.load("demo", ["train.precision=bf16"])
    assert runnable_precision(bf16) is bf16


# ---------------------------------------------------------------------------- the command line


def test_options_and_overrides_in_any_order(capsys):
    assert main(["--recipe", "demo", "eval.durations=null", "--dry-run", "train.lr=1"]) == 0
    printed = capsys.readouterr().out
    assert "lr: 1.0" in printed and "durations: null" in printed


def test_switching_the_model_drops_the_recipe_files_model_args(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="finetune"):
        assert main(["--recipe", "demo", "model.name=auto", "backbone.path=X", "--dry-run"]) == 0
    assert "args: {}" in capsys.readouterr().out
    assert (
        "model.name=auto: the recipe's options for simple_cnn left out: model.args.sample_rate=16000, "
        "model.args.n_mels=64" in caplog.text
    )
    fcn = recipes.load("demo", ["model.name=fcn", "model.args.n_mels=32"])
    assert fcn.model.args == {"n_mels": 32}, "what the overrides set again is kept"
    assert recipes.load("demo", ["model.args.n_mels=32"]).model.args == {"n_mels": 32, "sample_rate": 16000}


def test_an_empty_list_of_valid_model_args_says_none():
    with pytest.raises(recipes.RecipeError, match="unknown key model.args.depth for model 'auto'; valid: none$"):
        check_recipe(recipes.load("demo", ["model.name=auto", "backbone.path=X", "model.args.depth=3"]))
