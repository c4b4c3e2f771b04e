"""What every benchmark shares: timing in alternating rounds, and the result line and table."""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """What one call of `fn` returns, and its wall-clock seconds."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of `fn`."""
    return timed(fn)[1]


def once(fn: Callable[[], object]) -> Callable[[], list[float]]:
    """An arm for `alternate` that times one call of `fn` per round."""
    return lambda: [seconds(fn)]


def alternate(arms: Mapping[str, Callable[[], Sequence[T]]], rounds: int, warmup_rounds: int = 0) -> dict[str, list[T]]:
    """Call every arm once per round, in turn, and pool the measurements each returns, leaving
    out the first `warmup_rounds`. Alternating spreads a shared machine's noise over the arms."""
    samples: dict[str, list[T]] = {name: [] for name in arms}
    for index in range(warmup_rounds + rounds):
        for name, arm in arms.items():
            timings = arm()
            if index >= warmup_rounds:
                samples[name] += timings
    return samples


def process_context(quick: bool) -> multiprocessing.context.BaseContext:
    """Where a benchmark's processes come from: fresh interpreters (spawn: nothing inherited, as a
    launcher starts them); `quick` forks this one instead, which spares each process its imports."""
    return multiprocessing.get_context("fork" if quick else "spawn")


def median(values: Sequence[float]) -> float:
    """The middle measurement: robust to the bursts of a shared machine."""
    return statistics.median(values)


def figure(value: float) -> str:
    """A measured value with three significant digits (thousands separated)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


@dataclass(frozen=True)
class Result:
    """One case of a benchmark: the toolkit's figure, the bare baseline's, and the target ratio."""

    bench: str
    case: str
    toolkit: float
    bare: float
    unit: str
    target: float | None  # None: an informational case, no target
    higher_is_better: bool  # True for throughputs (ratio >= target), False for times (<=)
    note: str = ""

    @property
    def ratio(self) -> float:
        """toolkit / bare; NaN when the bare figure is 0 (an accuracy of 0 after a smoke test's 2 steps)."""
        return self.toolkit / self.bare if self.bare else math.nan

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "met" if met else "MISSED"

    @property
    def target_text(self) -> str:
        return "none" if self.target is None else f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def line(self) -> str:
        note = f"; {self.note}" if self.note else ""
        return (
            f"[{self.bench}] {self.case}: toolkit {figure(self.toolkit)} {self.unit}, bare "
            f"{figure(self.bare)} {self.unit} -> {self.ratio:.2f}x (target {self.target_text}) "
            f"{self.verdict}{note}"
        )


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    rows = ["| benchmark | case | toolkit | bare | unit | ratio | target | |", "|---|---|---|---|---|---|---|---|"]
    rows += [
        f"| {r.bench} | {r.case} | {figure(r.toolkit)} | {figure(r.bare)} | {r.unit} | "
        f"{r.ratio:.2f}x | {r.target_text} | {r.verdict} |"
        for r in results
    ]
    return "\n".join(rows)
