"""Smoke test of bench/: every benchmark runs at its tiny size and prints its ratio line.

Timings are not asserted (a shared machine is too noisy for that); the figures live in
bench/RESULTS.md. Both entry points are exercised: `python -m bench` and `python bench/run.py`.
The benchmarks, and the tag each prints its lines under, come from bench/registry.py.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.registry import BENCHMARKS, all_names

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REALDATA = PROJECT_ROOT.parent / "shared" / "realdata"
PROCESSES = 2  # the smoke test's benchmark processes at once: one per core of the 2-core machine
RATIO_LINE = re.compile(
    r"^\[(\w+)\] .+: toolkit \S+ \S+, bare \S+ \S+ -> \d+\.\d\dx "
    r"\((target [<>]= [\d.]+x\) (met|MISSED)|target none\) info)"
)


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)


def shares(count: int) -> list[list[str]]:
    """The benchmarks `python -m bench` runs, shared out to `count` processes: longest first (the
    registry's quick_seconds), each to the process with the fewest seconds so far."""
    names, seconds = [[] for _ in range(count)], [0.0] * count
    for name in sorted(all_names(), key=lambda name: -BENCHMARKS[name].quick_seconds):
        emptiest = seconds.index(min(seconds))
        names[emptiest].append(name)
        seconds[emptiest] += BENCHMARKS[name].quick_seconds
    return names


@pytest.mark.slow
def test_every_benchmark_prints_its_ratio_line():
    with ThreadPoolExecutor(PROCESSES) as pool:
        results = list(pool.map(lambda names: run_bench("-m", "bench", "--quick", *names), shares(PROCESSES)))
    for result in results:
        assert result.returncode == 0, result.stderr[-4000:]
        assert "| benchmark | case |" in result.stdout  # each process's final table
    stdout = "\n".join(result.stdout for result in results)
    printed = {m.group(1) for m in map(RATIO_LINE.match, stdout.splitlines()) if m}
    tags = {BENCHMARKS[name].tag for name in all_names()}
    if REALDATA.is_dir():  # the quality benchmark needs the real clips; it says so and skips without them
        assert printed == tags, stdout
        # the probe and scratch arms on both fold kinds (not refused by the artist-aware default), paired
        assert "[quality] (b) label-stratified vs artist-aware folds" in stdout
        assert "[quality] (d) label-stratified vs artist-aware folds" in stdout
        assert "artist-disjoint split" in stdout and "label-stratified - artist-aware on the" in stdout
    else:
        assert printed == tags - {"quality"} and "[quality] skipped" in stdout


@pytest.mark.slow
def test_script_entry_point_lists_the_benchmarks():
    result = run_bench("bench/run.py", "--help")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in BENCHMARKS)
    assert run_bench("bench/run.py", "--quick", "nope").returncode == 2


@pytest.mark.slow
def test_quality_fold_kinds_run_alone():
    result = run_bench("-m", "bench", "--help")  # the fold-kind comparison, without the hours-long arms
    assert result.returncode == 0, result.stderr
    assert "quality-folds" in result.stdout


def test_the_registry_is_data_read_without_side_effects():
    code = (
        "import os, sys; before = dict(os.environ); from bench.registry import BENCHMARKS, all_names; "
        "print(dict(os.environ) == before, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]  # no environment set, no benchmark (nor torch) imported
    tags = {BENCHMARKS[name].tag for name in all_names()}
    assert all(benchmark.tag in tags for benchmark in BENCHMARKS.values())  # a part prints under its whole
    assert "quality-folds" not in all_names()  # run by quality already
