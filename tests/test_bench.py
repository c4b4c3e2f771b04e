"""Smoke test of bench/: every benchmark runs at its tiny size and prints its ratio line.

Timings are not asserted (a shared machine is too noisy for that); the figures live in
bench/RESULTS.md. Both entry points are exercised: `python -m bench` and `python bench/run.py`.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REALDATA = PROJECT_ROOT.parent / "shared" / "realdata"
BENCHMARKS = ("data", "step", "inference", "probe", "index", "quality", "ranks", "commands", "frontends",
              "workers", "plugin")  # bench/run.py's, less quality-folds (it prints under [quality])
RATIO_LINE = re.compile(r"^\[(\w+)\] .+: toolkit \S+ \S+, bare \S+ \S+ -> \d+\.\d\dx "
                        r"\((target [<>]= [\d.]+x\) (met|MISSED)|target none\) info)")


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_every_benchmark_prints_its_ratio_line():
    result = run_bench("-m", "bench", "--quick")
    assert result.returncode == 0, result.stderr[-4000:]
    printed = [m.group(1) for m in map(RATIO_LINE.match, result.stdout.splitlines()) if m]
    if REALDATA.is_dir():  # the quality benchmark needs the real clips; it says so and skips without them
        assert set(printed) == set(BENCHMARKS), result.stdout
        # the probe and scratch arms on both fold kinds (not refused by the artist-aware default), paired
        assert "[quality] (b) label-stratified vs artist-aware folds" in result.stdout
        assert "[quality] (d) label-stratified vs artist-aware folds" in result.stdout
        assert "artist-disjoint split" in result.stdout and "label-stratified - artist-aware on the" in result.stdout
    else:
        assert set(printed) == set(BENCHMARKS) - {"quality"} and "[quality] skipped" in result.stdout
    assert "| benchmark | case |" in result.stdout  # the final table


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
