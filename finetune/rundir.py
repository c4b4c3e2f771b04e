"""Run folders: each run's own folder, created once, locked for the run's whole life, never shared.

A run folder is its identity (`run.json`: when it was created, by which process and version of the toolkit,
on which libraries and device (`finetune.provenance`), each resume). A new
run creates its folder atomically (`mkdir` without `exist_ok`; a default name that exists gets a
suffix), an `output_dir` that already holds a run is refused unless resuming, and a process that
finds the folder locked by another is refused at once. Resuming compares the recorded recipe with
the new one and refuses any change that would alter the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from finetune.atomic import write_atomically
from finetune.provenance import provenance
from finetune.recipe import Recipe, RecipeError, from_dict

logger = logging.getLogger("finetune")

IDENTITY_FILE = "run.json"  # the run's identity: id, created, pid, host, command, provenance, resumes
RECIPE_FILE = "recipe.yaml"  # the settings the run uses, written when it starts
LOCK_FILE = ".lock"  # held (flock) by the process that runs in the folder; released when it dies
HOLDER_FILE = ".lock.json"  # who holds the lock (pid, host, command), for the message that refuses another
RESULTS_FILE = "metrics.json"  # written last: a folder with it holds a finished run
CHECKPOINT_PREFIX = "checkpoint-"

# Keys a resume may change: they decide how a run is watched, fed or published, never what it
# computes. Any other change is a new run.
RESUME_MAY_CHANGE = (
    "description",
    "output_dir",
    "train.resume",
    "train.logging_steps",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "eval.durations",
    "hub.push_to_hub",
    "hub.repo_id",
    "hub.private",
    "train.trainer_args.report_to",
)


class RunFolderError(RecipeError):
    """A run folder that cannot be used for this run: the message says why and what to do."""


def read_identity(folder: Path) -> dict | None:
    """The folder's `run.json`, or None when it holds no run."""
    try:
        return json.loads((folder / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None


def recorded_version(found: dict) -> str | None:
    """The toolkit version a run.json's run was created by; None for a run folder older than
    `provenance.RECORDED_SINCE`, whose format readers know by that."""
    return found.get("version")


def holds_run(folder: Path) -> bool:
    """True when `folder` holds a run: its identity file, or (runs of older versions) checkpoints."""
    return (folder / IDENTITY_FILE).is_file() or any(folder.glob(f"{CHECKPOINT_PREFIX}*"))


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints, newest first (a run killed mid-save leaves one without trainer_state.json)."""
    complete = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file()]
    return sorted(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint."""
    complete = complete_checkpoints(folder)
    return str(complete[0]) if complete else None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What makes `checkpoint` unusable (a file cut short or unreadable), or None. Reads only headers
    and zip directories: torch's `.pt`/`.pth`/`.bin` files are zip archives, whose directory sits at
    the end, so a truncated one has none; safetensors files declare their size in their header."""
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(path):
                    pass
            elif path.suffix == ".safetensors":
                safetensors_damage(path)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            return f"{path.name}: {err}"
    return None


def safetensors_damage(path: Path) -> None:
    """Raise ValueError when a safetensors file is shorter or longer than its header declares."""
    with path.open("rb") as file:
        size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(size))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if 8 + size + max(ends, default=0) != path.stat().st_size:
        raise ValueError("cut short (its size differs from what its header declares)")


def usable_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint that is not damaged; a damaged newer one is passed over with a
    warning naming it and why (a resume from the one before loses only the steps between them)."""
    for checkpoint in complete_checkpoints(folder):
        damage = checkpoint_damage(checkpoint)
        if damage is None:
            return str(checkpoint)
        logger.warning("%s is damaged (%s): resuming from the checkpoint before it", checkpoint, damage)
    return None


def flatten(values: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(recorded: Recipe, new: Recipe) -> str:
    """The settings that differ between two recipes and that a resume may not change, shown as
    `key old -> new, ...` ("" when there are none)."""
    before, after = flatten(recorded.to_dict()), flatten(new.to_dict())
    changed = [
        key
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and key not in RESUME_MAY_CHANGE
    ]
    return ", ".join(f"{key} {before.get(key)!r} -> {after.get(key)!r}" for key in changed)


def recorded_recipe(folder: Path) -> Recipe | None:
    """The recipe a run in `folder` recorded when it started (None for a run without one)."""
    path = folder / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        return from_dict(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, RecipeError) as err:
        raise RunFolderError(f"{path}: the recorded recipe cannot be read ({err}); it cannot be resumed") from None


def check_resume(folder: Path, recipe: Recipe) -> None:
    """Refuse a resume whose recipe changes a setting that alters the result, naming the keys."""
    recorded = recorded_recipe(folder)
    if recorded is None:
        return
    changed = changed_settings(recorded, recipe)
    if changed:
        raise RunFolderError(
            f"train.resume: {folder} was started with other settings ({changed}); a resumed run "
            "keeps its settings: drop these overrides, or start a new run in another folder"
        )


def identity(recipe: Recipe) -> dict:
    """A new run's `run.json`; `id` is random, so it names this run wherever its folder moves."""
    return {
        "id": uuid.uuid4().hex,
        "recipe": recipe.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": sys.argv,
        **provenance(),
        "resumes": [],
    }


def in_use_message(folder: Path) -> str:
    """The refusal of a folder whose lock another process holds, naming that process (its
    `.lock.json`; a folder of a version that wrote none names its run.json's creator)."""
    try:
        found = json.loads((folder / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        recorded = read_identity(folder) or {}
        found = {} if recorded_version(recorded) else recorded
    doing = f", {found['doing']}" if found.get("doing") else ""
    who = f" (pid {found['pid']} on {found['host']}{doing})" if "pid" in found and "host" in found else ""
    return f"{folder} is in use by another process{who}; wait for it to end or choose another folder (output_dir=...)"


def lock(folder: Path, doing: str = "a run") -> FileLock:
    """Take the folder's lock without waiting, or refuse: another process uses it. The holder
    records itself in `.lock.json` (`doing`: what it does there), so a refusal names it."""
    held = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise RunFolderError(in_use_message(folder)) from None
    write_atomically(
        folder / HOLDER_FILE,
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "doing": doing, "command": sys.argv}),
    )
    return held


def release(folder: Path, held: FileLock) -> None:
    """Give the lock back, first removing the holder's record."""
    with contextlib.suppress(OSError):
        (folder / HOLDER_FILE).unlink()
    held.release()


def new_default_folder(recipe: Recipe, runs: Path = Path("runs")) -> Path:
    """runs/<recipe>-<time>, created here and now; a name that exists gets -2, -3, ..."""
    runs.mkdir(parents=True, exist_ok=True)
    stem = f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for number in range(1, 10_000):
        folder = runs / (stem if number == 1 else f"{stem}-{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RunFolderError(f"{runs}: no free run folder name for {stem}")


def created_time(folder: Path) -> float:
    found = read_identity(folder) or {}
    try:
        return time.mktime(time.strptime(found["created"], "%Y-%m-%dT%H:%M:%S%z"))
    except (KeyError, ValueError):
        return folder.stat().st_mtime


def latest_default_run(recipe: Recipe, runs: Path = Path("runs")) -> Path | None:
    """The newest runs/<recipe>-* folder with a checkpoint, for `train.resume=true` without output_dir."""
    candidates = [p for p in runs.glob(f"{recipe.name}-*") if p.is_dir() and last_checkpoint(p)]
    return max(candidates, key=created_time) if candidates else None


def choose_folder(recipe: Recipe) -> tuple[Path, bool]:
    """The folder this run will use and whether it was created here: output_dir, the run to resume,
    or a new default one."""
    if recipe.output_dir:
        folder = Path(recipe.output_dir).expanduser()
        try:
            folder.mkdir(parents=True)
            return folder, True
        except FileExistsError:
            if not folder.is_dir():
                raise RunFolderError(f"output_dir: {folder} exists and is not a folder") from None
            return folder, False
    if recipe.train.resume:
        previous = latest_default_run(recipe)
        if previous is not None:
            return previous, False
    return new_default_folder(recipe), True


def check_new_run(folder: Path) -> None:
    """A new run needs a folder that holds no run and nothing else."""
    found = read_identity(folder)
    if holds_run(folder):
        since = f" from {found['created']}" if found and "created" in found else ""
        raise RunFolderError(
            f"{folder} already holds a run{since}; train.resume=true continues it, or choose "
            "another folder (output_dir=...)"
        )
    others = sorted(p.name for p in folder.iterdir() if p.name not in (LOCK_FILE, HOLDER_FILE))
    if others:
        raise RunFolderError(
            f"{folder} is not empty ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}) "
            "and holds no run; choose an empty or new folder (output_dir=...)"
        )


@dataclasses.dataclass
class RunFolder:
    """A claimed run folder: `path`, whether the run continues one that was there (`resumed`), from
    which checkpoint (None: from the start), and whether that run had already finished (`finished`:
    nothing is left to do, nothing is written)."""

    path: Path
    resumed: bool
    checkpoint: str | None
    finished: bool = False


def is_finished(folder: Path) -> bool:
    """True when `folder` holds a finished run (its metrics.json is written last)."""
    return (folder / RESULTS_FILE).is_file()


def start(folder: Path, recipe: Recipe) -> RunFolder:
    """Check the (locked) folder for this run and record the run's identity and recipe in it. A
    resume of a finished run changes nothing: it is only reported."""
    if recipe.train.resume and holds_run(folder):
        check_resume(folder, recipe)
        if is_finished(folder):
            logger.info(
                "%s holds a finished run: train.resume=true has nothing to do, its results stay as they "
                "are (`python -m finetune evaluate %s` scores it again)",
                folder,
                folder,
            )
            return RunFolder(folder, resumed=True, checkpoint=None, finished=True)
        found = read_identity(folder) or identity(recipe)
        checkpoint = usable_checkpoint(folder)
        found["resumes"] = [
            *found.get("resumes", []),
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "from": checkpoint,
                **provenance(),
            },
        ]
        resumed = True
    else:
        check_new_run(folder)
        found, checkpoint, resumed = identity(recipe), None, False
    write_atomically(folder / IDENTITY_FILE, json.dumps(found, indent=2))
    write_atomically(folder / RECIPE_FILE, recipe.to_yaml())
    return RunFolder(folder, resumed, checkpoint)


def produced_nothing(folder: Path) -> bool:
    """True while a run has written no checkpoint and no result: nothing that a retry would lose."""
    return last_checkpoint(folder) is None and not is_finished(folder)


def clear(folder: Path, created: bool) -> None:
    """Remove what a run wrote into a folder it found new or empty (everything there is its own)."""
    if created:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in folder.iterdir():
        if path.name not in (LOCK_FILE, HOLDER_FILE):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@contextlib.contextmanager
def claim(recipe: Recipe) -> Iterator[RunFolder]:
    """The run's own folder, locked until the block ends (or the process dies). A new run that fails
    before its first checkpoint leaves no run behind, so the same command can run again."""
    folder, created = choose_folder(recipe)
    held = lock(folder, f"running {recipe.name}")
    claimed = None
    try:
        claimed = start(folder, recipe)
        yield claimed
    except BaseException:
        if claimed is None and created or claimed is not None and not claimed.resumed and produced_nothing(folder):
            clear(folder, created)
        raise
    finally:
        release(folder, held)


@contextlib.contextmanager
def hold(folder: str | Path, doing: str = "evaluate") -> Iterator[Path]:
    """Lock an existing run folder while a command adds to it (`evaluate`), refusing one in use."""
    folder = Path(folder)
    held = lock(folder, doing)
    try:
        yield folder
    finally:
        release(folder, held)
