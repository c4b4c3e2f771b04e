"""Header checks of a dataset's files, cached as JSON metadata so large indexes are built once.

Each file is checked by reading its header (`audio_duration`), never by decoding audio. The cache,
one JSON file per dataset root under `$FINETUNE_CACHE/headers/`, maps a file's path relative to
the root to `[size, mtime_ns, duration, error]`; a file whose size or mtime changed is checked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from finetune.console import progress
from finetune.data.audio import AudioReadError, audio_duration, os_cause
from finetune.machine import cache_dir

logger = logging.getLogger("finetune.data")

CACHE_VERSION = 1
# causes that say more about this moment than about the file (chmod keeps size and mtime): not cached
UNCACHED_CAUSES = ("permission denied", "file not found")


@dataclass
class Scan:
    """What a header check found, keyed by path relative to the dataset root."""

    durations: dict[str, float] = field(default_factory=dict)  # readable files, seconds
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> cause


def _cache_file(root: str) -> Path:
    digest = hashlib.sha1(root.encode()).hexdigest()[:16]
    return cache_dir() / "headers" / f"{digest}.json"


def _load(cache_file: Path, root: str) -> dict[str, list]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != CACHE_VERSION or data.get("root") != root:
        return {}
    return data["files"]


def _save(cache_file: Path, root: str, files: dict[str, list]) -> None:
    """Write atomically; a cache that cannot be written only costs time on the next build."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, delete=False, suffix=".tmp") as tmp:
            json.dump({"version": CACHE_VERSION, "root": root, "files": files}, tmp)
        os.replace(tmp.name, cache_file)
    except OSError as err:
        logger.warning("could not write the header cache %s: %s", cache_file, err)


def _check(paths: Sequence[str]) -> list[tuple[float | None, str | None]]:
    """(duration, None) for each readable header, (None, cause) otherwise."""
    results = []
    for path in paths:
        try:
            results.append((audio_duration(path), None))
        except AudioReadError as err:
            results.append((None, err.cause))
    return results


def scan_files(root: str, relpaths: Sequence[str]) -> Scan:
    """Check the headers of `relpaths` under the absolute `root`, reusing cached results."""
    cache_file = _cache_file(root)
    cached = _load(cache_file, root)
    scan, present, todo = Scan(), [], []
    for rel in relpaths:
        try:
            stat = os.stat(os.path.join(root, rel))
        except (FileNotFoundError, NotADirectoryError):
            scan.missing.append(rel)
            continue
        except OSError as err:  # e.g. a folder on the way that may not be searched
            scan.unreadable[rel] = os_cause(err)
            continue
        present.append(rel)
        key = [stat.st_size, stat.st_mtime_ns]
        if cached.get(rel, [])[:2] != key:
            todo.append(rel)
            cached[rel] = key + [None, None]
    if todo:
        chunks = [todo[i : i + 256] for i in range(0, len(todo), 256)]  # few, cheap thread hand-offs
        workers = min(32, 4 * (os.cpu_count() or 1))  # header reads wait on the disk, not the CPU
        with ThreadPoolExecutor(workers) as pool:
            jobs = pool.map(_check, ([os.path.join(root, rel) for rel in chunk] for chunk in chunks))
            for chunk, results in progress(zip(chunks, jobs), "checking audio headers", len(chunks), "chunks"):
                for rel, result in zip(chunk, results):
                    cached[rel][2:] = result
        _save(cache_file, root, {rel: entry for rel, entry in cached.items() if entry[3] not in UNCACHED_CAUSES})
    for rel in present:
        duration, error = cached[rel][2:]
        if error is None:
            scan.durations[rel] = duration
        else:
            scan.unreadable[rel] = error
    return scan
