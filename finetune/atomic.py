"""Files and folders written whole or not at all: written under a temporary sibling name, renamed into place.

A leaf module (standard library and safetensors only) shared by run folders, `export` and `pack`: a failure half-way (a full
disk, an unwritable place, an error in the middle) leaves no partial folder behind, so a retry is
never refused as "not empty", and an OSError names the folder being written.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError


# Errors about the place written, whatever path they name (shutil.copy names the source on a full disk).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers see the old or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextmanager
def removed_on_failure(folder: Path) -> Iterator[Path]:
    """`folder`, deleted with everything in it when the block raises."""
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def move_into_place(staging: Path, target: Path) -> None:
    """Rename `staging` to `target`, replacing what `target` holds (its old content is deleted once
    the new one is in place)."""
    if not target.exists():
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(old / target.name)
    staging.rename(target)
    shutil.rmtree(old)


def about(target: Path, err: OSError) -> OSError:
    """`err` again, naming `target` as the path it failed on."""
    return OSError(err.errno, err.strerror or str(err), str(target))


def is_about_staging(err: OSError, staging: Path) -> bool:
    """True when `err`, raised while writing `staging`, is a system error about the place written:
    a full or read-only disk, or a path that is none (a failed write) or inside `staging`. Errors
    the toolkit raises itself (no errno) and errors about other paths name their own paths."""
    if err.errno is None:
        return False
    return err.errno in WRITE_ERRNOS or err.filename is None or str(err.filename).startswith(str(staging))


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A new temporary folder beside `target` to write into; when the block succeeds it replaces
    `target` (the caller decides beforehand whether `target` may be replaced), when it fails it is
    removed. A system error about the place written is raised again naming `target`."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", err.filename) from err
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as err:
        raise about(target, err) from err
    try:
        with removed_on_failure(staging):
            yield staging
            move_into_place(staging, target)
    except OSError as err:
        if not is_about_staging(err, staging):
            raise
        raise about(target, err) from err


@contextmanager
def writing(target: Path, what: str) -> Iterator[None]:
    """Errors of the libraries that write `target` (safetensors, torch.save: a full disk, a lost
    mount) raised again as one OSError naming `target` and `what` was being written."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise OSError(getattr(err, "errno", None), f"could not write {what}: {cause}", str(target)) from err
