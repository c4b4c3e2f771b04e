"""Recipe values reach the Trainer: finetune.training.training_arguments() maps each train.* and
data.* setting onto TrainingArguments, and early stopping really stops a run."""

import json
import logging

import pytest
import torch

from finetune import recipe as recipes
from finetune.cli import main
from finetune.machine import local_accelerator
from finetune.training import training_arguments


def arguments(tmp_path, *overrides, multi_label=False):
    return training_arguments(recipes.load("demo", list(overrides)), tmp_path / "run", multi_label)


def test_plateau_scheduler_follows_the_selection_metric(tmp_path):
    plateau = ("train.scheduler=reduce_lr_on_plateau", "train.plateau_patience=3", "train.plateau_factor=0.25")
    args = arguments(tmp_path, *plateau)
    assert args.lr_scheduler_type == "reduce_lr_on_plateau"
    # by default the validation loss decides: lower is better, mode min
    assert args.lr_scheduler_kwargs == {"mode": "min", "patience": 3, "factor": 0.25}
    assert args.metric_for_best_model == "loss" and not args.greater_is_better
    # accuracy is better when higher: mode max
    args = arguments(tmp_path, *plateau, "train.metric=accuracy")
    assert args.lr_scheduler_kwargs == {"mode": "max", "patience": 3, "factor": 0.25}
    assert args.metric_for_best_model == "accuracy" and args.greater_is_better


def test_other_schedulers_get_no_plateau_kwargs(tmp_path):
    args = arguments(tmp_path, "train.scheduler=cosine", "train.warmup_ratio=0.1")
    assert args.lr_scheduler_type == "cosine"
    assert not args.lr_scheduler_kwargs
    assert args.warmup_steps == pytest.approx(0.1)


def test_optimiser_values_and_batch_sizes(tmp_path):
    args = arguments(
        tmp_path,
        "train.lr=3e-4",
        "train.weight_decay=0.05",
        "train.grad_accum=4",
        "train.max_grad_norm=0.5",
        "train.batch_size=6",
        "train.eval_batch_size=10",
        "train.max_steps=7",
        "seed=11",
        "train.logging_steps=3",
    )
    assert args.learning_rate == pytest.approx(3e-4)
    assert args.weight_decay == pytest.approx(0.05)
    assert args.gradient_accumulation_steps == 4
    assert args.max_grad_norm == pytest.approx(0.5)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (6, 10)
    assert args.max_steps == 7 and args.seed == 11 and args.logging_steps == 3
    assert arguments(tmp_path, "train.batch_size=6").per_device_eval_batch_size == 6


@pytest.mark.parametrize(
    "precision, fp16, bf16", [("fp32", False, False), ("fp16", True, False), ("bf16", False, True)]
)
def test_precision_sets_one_mixed_precision_flag(tmp_path, precision, fp16, bf16):
    args = arguments(tmp_path, f"train.precision={precision}")
    assert (args.fp16, args.bf16) == (fp16, bf16)


def test_evaluation_and_checkpoints_follow_one_rhythm(tmp_path):
    by_epoch = arguments(tmp_path)
    assert by_epoch.eval_strategy == "epoch" and by_epoch.save_strategy == "epoch"
    assert by_epoch.load_best_model_at_end
    by_steps = arguments(tmp_path, "train.save_steps=7", "train.save_total_limit=3")
    assert by_steps.eval_strategy == "steps" and by_steps.save_strategy == "steps"
    assert (by_steps.eval_steps, by_steps.save_steps, by_steps.save_total_limit) == (7, 7, 3)
    by_eval_steps = arguments(tmp_path, "train.eval_steps=5")
    assert by_eval_steps.save_strategy == "steps"
    assert (by_eval_steps.eval_steps, by_eval_steps.save_steps) == (5, 5)


def test_metric_for_best_model(tmp_path):
    for multi_label in (False, True):  # the validation loss, for genres and tags alike
        args = arguments(tmp_path, multi_label=multi_label)
        assert args.metric_for_best_model == "loss" and not args.greater_is_better
    args = arguments(tmp_path, "train.metric=macro_f1")
    assert args.metric_for_best_model == "macro_f1" and args.greater_is_better


def test_dataloader_workers_pinning_and_persistence(tmp_path):
    none = arguments(tmp_path, "data.num_workers=0")
    assert none.dataloader_num_workers == 0
    assert not none.dataloader_persistent_workers, "persistent workers need workers"
    two = arguments(tmp_path, "data.num_workers=2")
    assert two.dataloader_num_workers == 2 and two.dataloader_persistent_workers
    assert not arguments(tmp_path, "data.num_workers=2", "data.persistent_workers=false").dataloader_persistent_workers
    # transformers turns pinning off whenever it trains on the CPU (use_cpu), whatever was asked;
    # the CPU only when there is neither a CUDA nor an Apple GPU, and pinning by default only on CUDA.
    pinned = arguments(tmp_path, "data.pin_memory=true")
    assert pinned.use_cpu == (local_accelerator() == "cpu")
    assert pinned.dataloader_pin_memory == (not pinned.use_cpu)
    assert not arguments(tmp_path, "data.pin_memory=false").dataloader_pin_memory
    assert arguments(tmp_path).dataloader_pin_memory == torch.cuda.is_available()


def short_run(tmp_path, synthetic_root, *overrides):
    """A real run through the command line, evaluating after every step; its log history."""
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.batch_size=4",
                "train.eval_steps=1",
                "train.save_total_limit=1",
                "data.max_tracks=6",
                "data.num_workers=0",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                *overrides,
            ]
        )
        == 0
    )
    return json.loads((run_dir / "log_history.json").read_text())


def evaluations(history):
    return [(e["step"], e["eval_accuracy"]) for e in history if "eval_accuracy" in e]


@pytest.mark.slow
def test_early_stopping_ends_a_run_that_cannot_improve(tmp_path, synthetic_root):
    # lr 1e-30 (0 is refused): below float32 resolution, the weights never change (only batch-norm statistics drift), so the accuracy stalls.
    history = short_run(
        tmp_path,
        synthetic_root,
        "train.max_steps=10",
        "train.lr=1e-30",
        "train.early_stopping_patience=1",
        "train.early_stopping_min_steps=0",
        "train.metric=accuracy",
    )
    evals = evaluations(history)
    best, expected_stop = None, None
    for step, accuracy in evals:  # patience 1: the first evaluation that does not beat the best
        if best is not None and accuracy <= best:
            expected_stop = step
            break
        best = accuracy
    final_step = max(e["step"] for e in history)
    assert expected_stop is not None and expected_stop < 10, evals
    assert final_step == expected_stop, (
        f"early stopping should end the run at step {expected_stop} of 10, it reached {final_step}: {evals}"
    )


@pytest.mark.slow
def test_plateau_halves_the_learning_rate_after_an_evaluation_without_improvement(tmp_path, synthetic_root):
    lr = 0.002
    history = short_run(
        tmp_path,
        synthetic_root,
        "train.max_steps=6",
        f"train.lr={lr}",
        "train.logging_steps=1",
        "train.scheduler=reduce_lr_on_plateau",
        "train.plateau_patience=0",
        "train.plateau_factor=0.5",
        "train.early_stopping_patience=null",
        "train.metric=accuracy",
    )
    logged = {e["step"]: e["learning_rate"] for e in history if "learning_rate" in e}
    evals = evaluations(history)
    # The expected schedule from the run's own evaluations: torch's ReduceLROnPlateau (mode max,
    # relative threshold 1e-4, patience 0) multiplies the rate by the factor after every evaluation
    # that does not beat the best; the rate logged at step k + 1 follows the evaluation at step k.
    expected, current, best = {1: lr}, lr, None
    for step, accuracy in evals:
        if best is None or accuracy > best * (1 + 1e-4):
            best = accuracy
        else:
            current *= 0.5
        expected[step + 1] = current
    assert current < lr, f"no evaluation without improvement in this run, nothing to check: {evals}"
    for step, rate in sorted(logged.items()):
        assert rate == pytest.approx(expected[step], rel=1e-6), (step, logged, evals)


@pytest.mark.slow
def test_early_stopping_counts_no_evaluation_before_its_minimum_steps(tmp_path, synthetic_root):
    """The same stalled run (lr 1e-30) with patience 1 but 6 steps before anything counts: it goes on to
    the first evaluation after step 6 that does not beat the best, never stopping earlier."""
    history = short_run(
        tmp_path,
        synthetic_root,
        "train.max_steps=10",
        "train.lr=1e-30",
        "train.early_stopping_patience=1",
        "train.early_stopping_min_steps=6",
        "train.metric=accuracy",
    )
    evals = evaluations(history)
    best, expected_stop = None, 10
    for step, accuracy in evals:
        if best is not None and accuracy <= best and step >= 6:
            expected_stop = step
            break
        best = accuracy if best is None else max(best, accuracy)
    assert max(e["step"] for e in history) == expected_stop, evals
    assert expected_stop >= 6


@pytest.mark.slow
def test_a_model_kept_from_its_first_steps_is_warned_about(tmp_path, synthetic_root, caplog):
    """lr 1e-30: nothing moves, so the first evaluation stays the best and the kept model is step 2's."""
    with caplog.at_level(logging.WARNING, logger="finetune"):
        history = short_run(
            tmp_path, synthetic_root, "train.max_steps=20", "train.lr=1e-30", "train.eval_steps=2", "train.save_steps=2"
        )
    assert max(e["step"] for e in history) == 20
    assert (
        "the model kept is the checkpoint of step 2 of 20, selected on validation loss: it has barely "
        "trained" in caplog.text
    )
