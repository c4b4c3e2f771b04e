"""Provenance: what a reader needs to reproduce a run, recorded in its run.json when the run starts.

The toolkit's version (`finetune.__version__`: readers of older run folders key on it), Python's and
the libraries' versions (from the installed packages' metadata, importing none of them), the device
the run trains on, and the git commit of the toolkit's own checkout with whether it had changes not
committed. Outside a checkout, or where git is missing or slow, the commit is null: git never fails a run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

from finetune import __version__
from finetune.machine import local_accelerator

LIBRARIES = ("torch", "transformers", "peft", "datasets", "accelerate")
RECORDED_SINCE = "0.2.0"  # the first version whose run.json records these; a run.json without `version` is older
SOURCE = Path(__file__).resolve().parents[1]  # the folder holding the package: a checkout's top when run from one
GIT_SECONDS = 5


def library_versions() -> dict[str, str | None]:
    """name -> installed version (None where it is not installed) of the libraries a run depends on."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device() -> dict:
    """What the run trains on (`machine.local_accelerator`): `type` cuda | mps | cpu, its `name` and
    `count` (the GPUs visible; for the CPU, its cores)."""
    kind = local_accelerator()
    if kind == "cuda":
        import torch  # here, not above: the module's other facts need no torch

        return {"type": kind, "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    if kind == "mps":
        return {"type": kind, "name": "Apple GPU", "count": 1}
    return {"type": kind, "name": platform.processor() or platform.machine(), "count": os.cpu_count() or 1}


def git(folder: Path, *args: str) -> str | None:
    """git's output for `args` in `folder`; None when git is missing, slower than GIT_SECONDS or fails."""
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def checkout(folder: Path = SOURCE) -> dict | None:
    """{"commit", "dirty"} of the git checkout whose top folder is `folder` (dirty: files changed and not
    committed, or new and not ignored); None when `folder` is not the top of a checkout (a package
    installed inside someone else's checkout is not one of its own)."""
    found = git(folder, "rev-parse", "--show-toplevel", "HEAD")
    lines = (found or "").splitlines()
    if len(lines) != 2:
        return None
    top, commit = lines
    if Path(top).resolve() != Path(folder).resolve():
        return None
    changes = git(folder, "status", "--porcelain")
    return {"commit": commit, "dirty": None if changes is None else bool(changes.strip())}


def provenance() -> dict:
    """The facts run.json records of the code and machine that run: `version`, `python`, `libraries`,
    `device`, `git`."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "libraries": library_versions(),
        "device": device(),
        "git": checkout(),
    }


def describe(recorded: dict) -> list[str]:
    """Lines for a report's Setup section from a run.json; a run.json without a version is older than
    RECORDED_SINCE and recorded none of these."""
    if "version" not in recorded:
        return [f"toolkit: not recorded (written before finetune {RECORDED_SINCE})"]
    libraries = ", ".join(f"{name} {version or 'not installed'}" for name, version in recorded["libraries"].items())
    found = recorded["device"]
    source = recorded["git"]
    changes = {True: ", with changes not committed", False: ", clean", None: ""}
    return [
        f"toolkit: finetune {recorded['version']}, Python {recorded['python']}",
        f"libraries: {libraries}",
        f"device: {found['type']} ({found['name']}), {found['count']} {'cores' if found['type'] == 'cpu' else 'visible'}",
        f"source: git commit {source['commit']}{changes[source['dirty']]}"
        if source
        else "source: not a git checkout (commit not recorded)",
    ]
