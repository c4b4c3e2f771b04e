"""What the console shows: one progress bar per phase on a terminal; where stderr is not a terminal
(CI logs, `nohup`, a pipe) plain log lines instead; the Trainer's progress in the same style.

A leaf module that imports none of the heavy libraries: the command line sets the output up once
(`configure`), every long loop of the toolkit goes through `progress`, and the Trainer's callback
(`finetune.training.TrainingProgress`) writes through `bars_enabled` and `metric_text`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from finetune.metrics import LOSS, summary_names

T = TypeVar("T")
logger = logging.getLogger("finetune")

LOG_EVERY_SECONDS = 15.0  # without a terminal: a line at most this often during a long phase
QUIET_SECONDS = 2.0  # without a terminal: phases shorter than this end silently

# The libraries underneath read these when first imported: no bars or chatter of theirs.
QUIET_LIBRARIES = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}
# Warnings that library code raises on every call and that say nothing a user can act on.
QUIET_WARNINGS = ("Support for mismatched key_padding_mask and attn_mask",)  # torch, from WavLM's attention


class ConsoleFormatter(logging.Formatter):
    """Progress lines as they are; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def configure(replica: bool) -> None:
    """One process's console: our progress once per job (rank 0 logs INFO, replicas warnings only),
    no raw progress bars or chatter from the libraries underneath (already imported ones included)."""
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.disable_progress_bar()
        sys.modules["transformers"].logging.set_verbosity_error()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()
    toolkit = logging.getLogger("finetune")  # finetune.data etc. propagate to it; the root stays the user's
    for handler in [h for h in toolkit.handlers if isinstance(h.formatter, ConsoleFormatter)]:
        toolkit.removeHandler(handler)  # called again in one process: one handler, the current stderr
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter())
    toolkit.addHandler(handler)
    toolkit.setLevel(logging.WARNING if replica else logging.INFO)


def bars_enabled() -> bool:
    """Progress bars on a terminal; plain log lines elsewhere."""
    return sys.stderr.isatty()


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
    """'loss 1.2345, accuracy 0.700' from the Trainer's metrics (the loss and the summary metrics present)."""
    names = (LOSS, *summary_names())
    return ", ".join(f"{name} {metrics[prefix + name]:.4g}" for name in names if prefix + name in metrics)


@contextlib.contextmanager
def each_line_once(log: logging.Logger) -> Iterator[None]:
    """Within the block, `log` says each distinct line once: planning loads the recipe for every run, and
    what loading says (`the recipe's options for gtzan left out`) would come once per run."""
    said = set()

    def first_time(record: logging.LogRecord) -> bool:
        line = record.getMessage()
        new = line not in said
        said.add(line)
        return new

    log.addFilter(first_time)
    try:
        yield
    finally:
        log.removeFilter(first_time)
