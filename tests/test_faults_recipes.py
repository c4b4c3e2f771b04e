"""Answers that end right but read wrong (issue 27): recipe files that are no mapping or repeat a key,
learning rates that cannot train, a training loss that diverges, and Hub uploads that cannot happen,
each refused in one line that says what is wrong and what to do."""

import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from finetune.cli import main
from finetune.divergence import StopOnDivergence, TrainingDiverged
from test_refusals import refusal

# ---------------------------------------------------------------------------- recipe files


def test_a_recipe_file_that_is_a_list_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    line = refusal(tmp_path, "--recipe", str(path))
    assert line.startswith(f"error: {path}: a recipe is a mapping of keys")


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("train:\n  lr: 0.1\ntrain:\n  epochs: 2\n", "train", "lines 1 and 3"),
        ("data:\n  name: synthetic\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "train.lr", "lines 4 and 6"),
    ],
)
def test_a_key_given_twice_in_a_recipe_file_is_refused(tmp_path, text, key, lines):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    line = refusal(tmp_path, "--recipe", str(path), "train.max_steps=2")
    assert line == f"error: {path}: {key} is given twice ({lines}); keep one"


# ---------------------------------------------------------------------------- learning rates


@pytest.mark.slow
@pytest.mark.parametrize("override", ["train.lr=0", "train.lr=-0.001", "train.head_lr=0"])
def test_a_learning_rate_that_cannot_train_is_refused_before_any_data(tmp_path, override):
    key = override.partition("=")[0]
    line = refusal(tmp_path, "--recipe", "demo", override, "train.max_steps=2")
    assert line.startswith(f"error: {key}: ") and line.endswith("it must be greater than 0")
    assert not (tmp_path / "cache").exists(), "the demo's data is not even generated"


# ---------------------------------------------------------------------------- divergence


def drive(event: str, tmp_path, model: torch.nn.Module, step: int = 1, bf16: bool = False, optimizer=None, **kwargs):
    """Call StopOnDivergence's `event` as the Trainer does, with real arguments, state and optimizer."""
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=0.5, max_grad_norm=1.0, use_cpu=True, bf16=bf16, report_to="none"
    )
    state = TrainerState(global_step=step, max_steps=10)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    return getattr(StopOnDivergence(), event)(args, state, TrainerControl(), model=model, optimizer=optimizer, **kwargs)


def test_a_finite_training_passes(tmp_path):
    model = torch.nn.Linear(3, 2)
    for event, extra in [
        ("on_optimizer_step", {}),
        ("on_log", {"logs": {"loss": 1.2, "learning_rate": 0.5}}),
        ("on_evaluate", {"metrics": {"eval_loss": 0.9}}),
    ]:
        drive(event, tmp_path, model, **extra)


@pytest.mark.parametrize(
    "event, extra, what, bf16, tries",
    [
        ("on_log", {"logs": {"loss": math.nan, "learning_rate": 0.5}}, "the training loss is nan", False, ""),
        (
            "on_evaluate",
            {"metrics": {"eval_loss": math.inf}},
            "the validation loss is inf",
            True,
            ", train.precision=fp32",
        ),
    ],
)
def test_a_loss_that_is_not_finite_stops_the_run(tmp_path, event, extra, what, bf16, tries):
    with pytest.raises(TrainingDiverged) as stopped:
        drive(event, tmp_path, torch.nn.Linear(3, 2), step=4, bf16=bf16, **extra)
    assert str(stopped.value) == (
        f"training diverged at step 4: {what} (learning rate 0.5); try a lower train.lr, "
        f"a lower train.max_grad_norm (now 1){tries}"
    )


def test_weights_that_are_not_finite_stop_the_run_at_the_step_that_made_them(tmp_path):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.bias[1] = math.inf
    with pytest.raises(
        TrainingDiverged,
        match="^training diverged at step 3: the training loss or its gradients "
        r"were nan/inf and the weights are no longer finite \(learning rate 0.5\)",
    ):
        drive("on_optimizer_step", tmp_path, model, step=2)  # global_step counts the steps done before this one
    head_lr = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-5}, {"params": [model.bias], "lr": 1e-3}])
    with pytest.raises(TrainingDiverged, match=r"\(learning rates up to 0.001\)"):
        drive("on_optimizer_step", tmp_path, model, optimizer=head_lr)


@pytest.mark.slow
def test_a_diverging_run_says_so_in_one_line_before_any_metric(tmp_path, synthetic_root, capsys):
    """lr 1e30: the second step's loss is nan; without the check, scikit-learn's "Input contains NaN."
    ended the run at the first evaluation."""
    code = main(
        [
            "--recipe",
            "demo",
            "train.max_steps=3",
            "train.lr=1e30",
            "train.batch_size=4",
            "data.max_tracks=12",
            "data.num_workers=0",
            "eval.durations=null",
            f"data.root={synthetic_root}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and errors == [
        "error: training diverged at step 2: the training loss or its gradients were nan/inf and the weights are "
        "no longer finite (learning rate 1e+30); try a lower train.lr, a lower train.max_grad_norm (now 1)"
    ]
    assert not (tmp_path / "run").exists(), "a run stopped before its first checkpoint leaves no folder"


@pytest.mark.slow
def test_a_model_whose_outputs_diverged_at_an_evaluation_says_so(tmp_path, synthetic_root, capsys):
    """Evaluated right after step 1 at lr 1e30: the weights are huge but finite, the outputs nan."""
    code = main(
        [
            "--recipe",
            "demo",
            "train.max_steps=3",
            "train.eval_steps=1",
            "train.lr=1e30",
            "train.batch_size=4",
            "data.max_tracks=12",
            "data.num_workers=0",
            "eval.durations=null",
            f"data.root={synthetic_root}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith("error: training diverged") and "train.lr" in errors[0]


# ---------------------------------------------------------------------------- the Hub


@pytest.mark.parametrize(
    "repo_id, problem",
    [
        (None, "hub.repo_id: set it (user/name) when hub.push_to_hub=true"),
        ("someone/not a name", "hub.repo_id: 'someone/not a name' is not a Hub repository id"),
        ("a/b/c", "hub.repo_id: 'a/b/c' is not a Hub repository id"),
    ],
)
def test_a_repo_id_the_hub_refuses_is_refused_before_any_data(tmp_path, repo_id, problem):
    line = refusal(
        tmp_path, "--recipe", "demo", "hub.push_to_hub=true", f"hub.repo_id={repo_id or 'null'}", "train.max_steps=2"
    )
    assert line.startswith(f"error: {problem}")
    assert not (tmp_path / "cache").exists(), "the demo's data is not even generated"


@pytest.mark.slow
def test_a_push_asked_offline_is_refused_before_training_and_says_how_to_push_later(tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest
    line = refusal(
        tmp_path, "--recipe", "demo", "hub.push_to_hub=true", "hub.repo_id=someone/demo", "train.max_steps=2"
    )
    assert line == (
        "error: hub.push_to_hub=true: the upload cannot happen offline (HF_HUB_OFFLINE=1); unset "
        "HF_HUB_OFFLINE, or train with hub.push_to_hub=false and push the run later with "
        "`python -m finetune export RUN --to DIR --push-to-hub someone/demo`"
    )
    online = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune",
            "--recipe",
            "demo",
            "hub.push_to_hub=true",
            "hub.repo_id=someone/demo",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},
        timeout=300,
    )
    assert online.returncode == 0, online.stderr[-2000:]
