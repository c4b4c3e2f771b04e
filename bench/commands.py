"""Commands that only read and check: `--recipe demo --dry-run`, the same for a pretrained-backbone
recipe (mert_mtat), and `models`, each as a fresh `python -m finetune` process vs a bare
`python -c pass` (the interpreter's own start), alternating rounds, medians.

Issue 20 asks for each under a second: they read the registries as data (finetune.checks,
finetune.model_options) and import no torch, transformers or datasets. No ratio target (the bare
start varies with the machine more than the toolkit's share does); the note says whether the
command took under a second.
"""

from __future__ import annotations

import subprocess
import sys

from bench.timing import Result, alternate, median, seconds

COMMANDS = {
    "--recipe demo --dry-run": ["--recipe", "demo", "--dry-run"],
    "--recipe mert_mtat --dry-run": ["--recipe", "mert_mtat", "--dry-run", "data.root=/data/mtat"],
    "models": ["models"],
}
ROUNDS = {False: 7, True: 1}
WARMUP_ROUNDS = {False: 1, True: 0}
GOAL_SECONDS = 1.0


def process(argv: list[str]):
    """An arm: one fresh interpreter running `argv`, its wall-clock seconds."""

    def arm() -> list[float]:
        return [seconds(lambda: subprocess.run([sys.executable, *argv], check=True, capture_output=True))]

    return arm


def run(quick: bool) -> list[Result]:
    arms = {"bare": process(["-c", "pass"])}
    arms.update({name: process(["-m", "finetune", *argv]) for name, argv in COMMANDS.items()})
    times = {name: median(measured) for name, measured in alternate(arms, ROUNDS[quick], WARMUP_ROUNDS[quick]).items()}
    return [
        Result(
            "commands",
            f"python -m finetune {name}",
            times[name],
            times["bare"],
            "s",
            None,
            higher_is_better=False,
            note=f"{'under' if times[name] < GOAL_SECONDS else 'NOT under'} {GOAL_SECONDS:g} s",
        )
        for name in COMMANDS
    ]
