"""What the console shows: one progress bar per phase on a terminal; where stderr is not a terminal
(CI logs, `nohup`, a pipe) plain log lines instead; the Trainer's progress in the same style.

A leaf module: the command line sets the style once (`configure`), every long loop of the
toolkit goes through `progress`, and the Trainer reports through `TrainingProgress`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm
from transformers import TrainerCallback

T = TypeVar("T")
logger = logging.getLogger("finetune")

LOG_EVERY_SECONDS = 15.0  # without a terminal: a line at most this often during a long phase
QUIET_SECONDS = 2.0  # without a terminal: phases shorter than this end silently
_bars: bool | None = None  # None: bars when stderr is a terminal


def configure(bars: bool | None = None) -> None:
    """Progress bars on (True), off (False, log lines instead) or as the terminal says (None)."""
    global _bars
    _bars = bars


def bars_enabled() -> bool:
    return sys.stderr.isatty() if _bars is None else _bars


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a progress bar on a terminal, else with a log line now and then on a long phase."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if bars_enabled():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
        return
    start = last = time.monotonic()
    count = 0
    for count, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_SECONDS:
            logger.info("%s: %d%s %s", desc, count, f"/{total}" if total else "", unit)
            last = now
    if time.monotonic() - start >= QUIET_SECONDS:
        logger.info("%s: %d %s in %.0f s", desc, count, unit, time.monotonic() - start)


def metric_text(metrics: dict, prefix: str = "eval_") -> str:
    """'loss 1.2345, accuracy 0.700' from the Trainer's metrics (the headline ones present)."""
    names = ("loss", "accuracy", "macro_f1", "roc_auc_macro", "pr_auc_macro")
    return ", ".join(f"{name} {metrics[prefix + name]:.4g}" for name in names if prefix + name in metrics)


class TrainingProgress(TrainerCallback):
    """The Trainer's progress: a bar of optimizer steps with the last loss on a terminal, one line
    per evaluation; without a terminal, a line per logged loss and per evaluation. Replaces the
    Trainer's own printer, which prints raw log dictionaries between nested bars."""

    def __init__(self):
        self.bar = None
        self.started = 0.0

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            logger.info("%s", text)

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if bars_enabled() and state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero or "loss" not in logs:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")
        else:
            logger.info("step %d/%d: loss %.4f, lr %.2e", state.global_step, state.max_steps, logs["loss"],
                        logs.get("learning_rate", 0.0))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:
            self._line(f"step {state.global_step}: validation {metric_text(metrics or {})}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if state.is_world_process_zero:
            best = f", best checkpoint at step {state.best_global_step}" if state.best_global_step else ""
            logger.info("training: %d steps in %.0f s%s", state.global_step, time.monotonic() - self.started, best)
