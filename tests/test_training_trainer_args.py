"""train.trainer_args: any other transformers.TrainingArguments field, checked against the dataclass
before anything heavy runs, and the device rule (CUDA, else Apple's MPS, else the CPU)."""

import json
import logging

import pytest
import torch
from transformers.integrations import get_available_reporting_integrations
from transformers.optimization import Adafactor

from finetune import recipe as recipes
from finetune.cli import main
from finetune.machine import accelerator
from finetune.training import check_trainer_args, training_arguments


def arguments(tmp_path, *overrides):
    return training_arguments(recipes.load("demo", list(overrides)), tmp_path / "run", False)


def refusal(*overrides) -> str:
    with pytest.raises(recipes.RecipeError) as err:
        check_trainer_args(recipes.load("demo", list(overrides)))
    return str(err.value)


def test_values_reach_training_arguments(tmp_path):
    args = arguments(
        tmp_path,
        "train.trainer_args={optim: adafactor, adam_epsilon: 1e-6, report_to: none}",
        "train.trainer_args.torch_empty_cache_steps=5",
        "train.trainer_args.dataloader_drop_last=true",
    )
    assert args.optim == "adafactor"
    assert args.adam_epsilon == pytest.approx(1e-6)  # YAML 1.1 reads 1e-6 as a string: converted
    assert args.report_to == [] and args.torch_empty_cache_steps == 5 and args.dataloader_drop_last
    assert args.learning_rate == pytest.approx(0.002), "the recipe's own settings stay"
    assert not arguments(tmp_path).dataloader_drop_last, "nothing set without trainer_args"


def test_unknown_fields_are_refused_with_the_closest_one():
    assert refusal("train.trainer_args.optm=sgd") == (
        "train.trainer_args.optm: not a transformers.TrainingArguments field; did you mean train.trainer_args.optim?"
    )
    # the closest field is one a recipe key sets: the recipe key is suggested
    assert "did you mean train.lr?" in refusal("train.trainer_args.lerning_rate=0.1")


@pytest.mark.parametrize(
    "field, key",
    [
        ("learning_rate", "train.lr"),
        ("per_device_train_batch_size", "train.batch_size"),
        ("warmup_ratio", "train.warmup_ratio"),
        ("fp16", "train.precision"),
        ("dataloader_num_workers", "data.num_workers"),
        ("seed", "seed"),
    ],
)
def test_fields_a_recipe_key_sets_are_refused_naming_the_key(field, key):
    assert refusal(f"train.trainer_args.{field}=1") == f"train.trainer_args.{field}: set {key} instead"


def test_fields_the_toolkit_relies_on_are_refused():
    assert "finetune sets it" in refusal("train.trainer_args.remove_unused_columns=true")


def test_values_are_checked_against_the_field():
    assert refusal("train.trainer_args.torch_compile=maybe") == (
        "train.trainer_args.torch_compile: expected true or false, got 'maybe'"
    )
    assert "did you mean adamw_torch?" in refusal("train.trainer_args.optim=adamw_trch")


def test_report_to_needs_its_package():
    installed = set(get_available_reporting_integrations())
    missing = next((name for name in ("wandb", "mlflow", "tensorboard") if name not in installed), None)
    if missing is None:
        pytest.skip("wandb, mlflow and tensorboard are all installed here")
    assert refusal(f"train.trainer_args.report_to={missing}") == (
        f"train.trainer_args.report_to: {missing} is not installed; pip install {missing}"
    )
    assert "is not one of all, none" in refusal("train.trainer_args.report_to=[nobody]")
    assert check_trainer_args(recipes.load("demo", ["train.trainer_args.report_to=none"])) == {"report_to": "none"}


@pytest.mark.slow
def test_a_real_run_uses_the_requested_optimizer(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=2",
                "train.batch_size=4",
                "data.max_tracks=6",
                "data.num_workers=0",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                "train.trainer_args={dataloader_drop_last: false, optim: adafactor}",
            ]
        )
        == 0
    )
    assert json.loads((run_dir / "log_history.json").read_text())
    (checkpoint,) = run_dir.glob("checkpoint-*")
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)["param_groups"]
    adafactor = Adafactor([torch.zeros(1)], lr=1e-3, relative_step=False).defaults
    assert all(set(adafactor) <= set(group) and "betas" not in group for group in saved), saved[0].keys()


@pytest.mark.parametrize(
    "cuda, mps, device", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_device_rule_prefers_cuda_then_apple_gpus(cuda, mps, device):
    assert accelerator(cuda, mps) == device


def test_trainer_args_may_force_the_cpu(tmp_path):
    assert arguments(tmp_path, "train.trainer_args.use_cpu=true").use_cpu


def test_dry_run_refuses_a_bad_trainer_arg_in_one_line(capsys):
    assert main(["--recipe", "demo", "--dry-run", "train.trainer_args.optm=sgd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: train.trainer_args.optm: not a transformers.TrainingArguments field; "
        "did you mean train.trainer_args.optim?"
    ]


@pytest.mark.slow
def test_a_run_reports_to_wandb_offline(tmp_path, synthetic_root, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=2",
                "train.batch_size=4",
                "data.max_tracks=6",
                "data.num_workers=0",
                f"data.root={synthetic_root}",
                f"output_dir={tmp_path / 'run'}",
                "train.trainer_args={report_to: wandb}",
            ]
        )
        == 0
    )
    (logged,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    assert logged.stat().st_size > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only case")
def test_fsdp_on_cpu_processes_says_it_is_ignored(tmp_path, caplog):
    """accelerate enables FSDP on GPUs only; on CPU processes the run says so instead of pretending."""
    with caplog.at_level(logging.WARNING, logger="finetune"):
        args = arguments(tmp_path, "train.trainer_args={fsdp: true, fsdp_config: {use_orig_params: true}}")
    assert args.fsdp and "accelerate ignores it on CPU processes" in caplog.text
