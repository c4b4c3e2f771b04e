"""Files and folders written whole or not at all: written under a temporary sibling name, renamed into place.

A leaf module (standard library and safetensors only) shared by run folders, `export` and `pack`: a failure half-way (a full
disk, an unwritable place, an error in the middle) leaves no partial folder behind, so a retry is
never refused as "not empty", and an OSError names the folder being written. Folders are made by
mkdir, with the mode (umask, default ACLs) any new folder of the user's gets.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

# Errors about the place written, whatever path they name (shutil.copy names the source on a full disk).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# Free bytes under which a library's failed write (torch.save, safetensors: errors in their own
# words, without an errno) is put down to a full disk.
NEARLY_FULL = 2**20


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: readers see the old or the new.
    The temporary name is unique across processes and machines (workers on a shared disk may write
    the same table at once)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write in the block, then renamed onto `path`: readers, and workers
    writing the same table at once, see one whole version (the name keeps `path`'s ending)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{uuid.uuid4().hex}.{path.name}")
    yield temporary
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


def sibling_folder(target: Path) -> Path:
    """A new, empty folder beside `target` under a temporary name, made by mkdir (tempfile.mkdtemp
    would make it 0o700: nobody else could read an export on shared storage)."""
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


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
        staging = sibling_folder(target)
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


def free_bytes(place: Path) -> int | None:
    """Free space on the filesystem that holds `place` (or its nearest existing parent); None when
    that cannot be asked (a lost mount)."""
    try:
        return shutil.disk_usage(next(folder for folder in (place, *place.parents) if folder.exists())).free
    except OSError:
        return None


def disk_full(err: Exception, place: Path) -> bool:
    """True when `err`, raised while writing `place`, comes of a full disk: ENOSPC anywhere in its
    chain, or a library's error (torch.save, safetensors, soundfile say it in their own words) while
    the filesystem holding `place` has (nearly) no free space left."""
    cause = err
    while cause is not None:
        if getattr(cause, "errno", None) == errno.ENOSPC:
            return True
        cause = cause.__cause__ or cause.__context__
    return not isinstance(err, OSError) and (free := free_bytes(place)) is not None and free < NEARLY_FULL


@contextmanager
def writing(target: Path, what: str) -> Iterator[None]:
    """Errors of the libraries that write `target` (safetensors, torch.save, soundfile: a full disk,
    a lost mount) raised again as one OSError naming `target` and `what` was being written; a full
    disk is called so, whatever words the library used."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as err:
        if disk_full(err, target):
            number, cause = errno.ENOSPC, os.strerror(errno.ENOSPC)
        else:
            number = getattr(err, "errno", None)
            cause = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise OSError(number, f"could not write {what}: {cause}", str(target)) from err
