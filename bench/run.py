"""Run the benchmarks: `python -m bench [--quick] [name ...]` or `python bench/run.py ...`.

Prints one ratio line per case as it is measured, then a Markdown table of all of them. Nothing
reaches the Hub; caches go to a temporary folder (never the user's), removed at the end.
"""

from __future__ import annotations

import argparse
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

from bench import commands, data, frontends, index, inference, plugin, probe, quality, ranks, step, workers
from bench.timing import table

BENCHMARKS = {
    "data": data.run,
    "step": step.run,
    "inference": inference.run,
    "probe": probe.run,
    "index": index.run,
    "quality": quality.run,
    "quality-folds": quality.fold_kinds,  # the fold-kind comparison alone (part of quality)
    "ranks": ranks.run,
    "commands": commands.run,
    "frontends": frontends.run,
    "workers": workers.run,
    "plugin": plugin.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test), not figures")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, 2 threads stall at "
                             "OpenMP barriers whenever another process takes a core)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        os.environ["FINETUNE_CACHE"] = cache
        for name in args.names or BENCHMARKS:
            for result in BENCHMARKS[name](args.quick):
                print(result.line(), flush=True)
                results.append(result)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
