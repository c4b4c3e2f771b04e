"""Run the benchmarks: `python -m bench [--quick] [name ...]` or `python bench/run.py ...`.

Prints one ratio line per case as it is measured, then a Markdown table of all of them. Nothing
reaches the Hub; caches go to a temporary folder (never the user's), removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Offline, and no progress bars (tqdm reads TQDM_DISABLE when it is imported): the lines stay readable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch
import transformers

from bench.registry import BENCHMARKS, all_names
from bench.timing import table


def listing() -> str:
    """The benchmarks, one unbroken line, and those a run of all leaves out (parts of others)."""
    parts = [f"{name} (a part of {benchmark.tag})" for name, benchmark in BENCHMARKS.items() if name not in all_names()]
    return f"benchmarks: {', '.join(BENCHMARKS)}\nnone named: all but {', '.join(parts)}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        epilog=listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="name", help="benchmarks to run (listed below)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test), not figures")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine, 2 threads stall at "
        "OpenMP barriers whenever another process takes a core)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def load(name: str, quick: bool):
    """The benchmark's function, its module imported. --quick leaves every object made so far out of
    garbage collection (gc.freeze): each toolkit run ends with a gc.collect, a third of a second over
    all the imported modules otherwise; the figures' runs keep the interpreter's default."""
    function = BENCHMARKS[name].load()
    if quick:
        gc.freeze()
    return function


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["FINETUNE_CACHE"] = cache
        for name in args.names or all_names():
            for result in load(name, args.quick)(args.quick):
                print(result.line(), flush=True)
                results.append(result)
    print()
    print(table(results))
    missed = [result for result in results if result.verdict == "MISSED"]
    if missed and not args.quick:  # quick sizes give no figures, so nothing to explain
        print(
            f"\n{len(missed)} target(s) missed: bench/RESULTS.md says, case by case, where the time goes "
            "and why (the latest section naming the case)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
