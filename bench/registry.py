"""The benchmarks by name, as data: where each one's code is and the tag its lines print under.

Importing this module imports no benchmark (nor torch) and sets nothing: bench/run.py loads the
benchmarks it runs, and the tests read the names and tags from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """`entry` ("module:function") measures, called with `quick`, and returns its results; its lines
    print as `[tag]`. A part of another benchmark (`part_of_all` False) runs only when named.
    `quick_seconds`: about how long its --quick takes on a quiet 2-core machine, its imports left
    out (the smoke test shares the benchmarks out to its processes by it)."""

    entry: str
    tag: str
    quick_seconds: float
    part_of_all: bool = True

    def load(self) -> Callable[[bool], list]:
        module, function = self.entry.split(":")
        return getattr(importlib.import_module(module), function)


def own(module: str, quick_seconds: float) -> Benchmark:
    """A benchmark that is its module's `run` and prints under the module's name."""
    return Benchmark(f"bench.{module}:run", module, quick_seconds)


BENCHMARKS = {
    "data": own("data", 3),
    "step": own("step", 2),
    "inference": own("inference", 1),
    "probe": own("probe", 1),
    "index": own("index", 2),
    "quality": own("quality", 30),
    # the fold-kind comparison alone, without quality's other (hours-long) arms; quality runs it too
    "quality-folds": Benchmark("bench.quality:fold_kinds", "quality", 25, part_of_all=False),
    "ranks": own("ranks", 1),
    "commands": own("commands", 2),
    "frontends": own("frontends", 1),
    "workers": own("workers", 18),
    "plugin": own("plugin", 1),
}


def all_names() -> list[str]:
    """The benchmarks `python -m bench` runs when none is named."""
    return [name for name, benchmark in BENCHMARKS.items() if benchmark.part_of_all]
