"""What this machine offers the toolkit: its accelerator, DataLoader workers and the cache folder.

A leaf module: training, the probe, predict and the studies ask it, none of them another.
"""

from __future__ import annotations

import os
from pathlib import Path


def accelerator(cuda: bool, mps: bool) -> str:
    """The device to train and predict on: a CUDA GPU, else an Apple GPU (MPS), else the CPU."""
    return "cuda" if cuda else "mps" if mps else "cpu"


def local_accelerator() -> str:
    """`accelerator` of this machine."""
    import torch  # here, not above: the cache folder and worker counts are asked by commands that need no torch

    return accelerator(torch.cuda.is_available(), torch.backends.mps.is_available())


def default_workers() -> int:
    """DataLoader workers from the core count, leaving one for the main process."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def cache_dir() -> Path:
    """$FINETUNE_CACHE, else $XDG_CACHE_HOME/finetune (default ~/.cache/finetune)."""
    base = (
        os.environ.get("FINETUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finetune"
    )
    return Path(base)
