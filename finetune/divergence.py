"""A run whose training diverges stops in one line that says so, before a nan reaches the metrics.

The Trainer leaves a nan or inf step loss out of the logged loss (`logging_nan_inf_filter`), so a
diverged run logs finite losses until its first evaluation fails in scikit-learn ("Input contains
NaN."). A nan or inf loss makes nan gradients, which the optimizer writes into the weights: checking
the weights after each optimizer step finds the step that diverged.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback


class TrainingDiverged(ValueError):
    """The training diverged (a loss or the weights nan/inf): one `error:` line, exit status 2."""


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every trainable weight of `model` is finite (one device sync)."""
    flags = [weight.isfinite().all() for weight in model.parameters() if weight.requires_grad]
    return not flags or bool(torch.stack([flag.to(flags[0].device) for flag in flags]).all())


def learning_rate_text(optimizer) -> str:
    """The learning rate the optimizer uses now ('learning rates up to X' when its groups differ)."""
    rates = {group["lr"] for group in optimizer.param_groups}
    return f"learning rate {max(rates):.3g}" if len(rates) == 1 else f"learning rates up to {max(rates):.3g}"


def diverged(args, step: int, what: str, optimizer) -> TrainingDiverged:
    """The error for a run that diverged at `step`, with what to try."""
    tries = ["a lower train.lr", f"a lower train.max_grad_norm (now {args.max_grad_norm:g})"]
    if args.fp16 or args.bf16:
        tries.append("train.precision=fp32")
    return TrainingDiverged(
        f"training diverged at step {step}: {what} ({learning_rate_text(optimizer)}); try {', '.join(tries)}"
    )


class StopOnDivergence(TrainerCallback):
    """Stops the run, raising TrainingDiverged, when the weights after an optimizer step, a logged
    training loss or a validation loss are nan or inf."""

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not weights_finite(model):  # global_step counts the steps before this one
            raise diverged(
                args,
                state.global_step + 1,
                "the training loss or its gradients were nan/inf and the weights are no longer finite",
                optimizer,
            )

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise diverged(args, state.global_step, f"the training loss is {loss}", optimizer)

    def on_evaluate(self, args, state, control, metrics=None, optimizer=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            raise diverged(args, state.global_step, f"the validation loss is {loss}", optimizer)
