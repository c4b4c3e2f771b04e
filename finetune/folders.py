"""Which command's results a folder holds, so that a command writing a folder (`search --out`,
`compare --vary --out`, `cv --out`) refuses one that holds another command's, as training refuses
a folder that is not its own.

A training run's marker files are named by `finetune.rundir`, which writes them; the others are data
here, the names `finetune.cv.write_summary`, `finetune.vary` and `finetune.search` write (they import
this module, so it cannot import them).
"""

from __future__ import annotations

from pathlib import Path

from finetune.rundir import CHECKPOINT_PREFIX, IDENTITY_FILE

VARY_FILE = "vary.json"  # written at the end of `compare --vary`
JOURNAL_FILE = "journal.log"  # a search's default storage
TRIALS_FILE = "trials.csv"  # a search's table, rewritten after every trial

# command -> (its results in words, the files or folders (globs) that mark them), tried in this order
RESULTS = {
    "train": ("a training run", (IDENTITY_FILE, f"{CHECKPOINT_PREFIX}*")),
    "cv": ("a cross-validation", ("summary.json", "summary.md")),
    "vary": ("a comparison of values (compare --vary)", (VARY_FILE,)),
    "search": ("a search", (JOURNAL_FILE, TRIALS_FILE)),
}


class OtherResults(ValueError):
    """A folder given to one command that holds another command's results."""


def holder(folder: Path) -> tuple[str, str] | None:
    """(the command whose results `folder` holds, the file that shows it), or None when it holds none."""
    for command, (_, patterns) in RESULTS.items():
        for pattern in patterns:
            found = sorted(path.name for path in folder.glob(pattern))
            if found:
                return command, found[0]
    return None


def check_output_folder(folder: str | Path, command: str) -> None:
    """Refuse `folder` as `command`'s output when it holds another command's results (nothing is lost,
    and nothing is mixed): a new, empty or its own folder is fine."""
    held = holder(Path(folder))
    if held is not None and held[0] != command:
        (theirs, _), (ours, _) = RESULTS[held[0]], RESULTS[command]
        raise OtherResults(
            f"--out {folder} holds {theirs} ({held[1]}); {ours} needs a new or empty folder, or its "
            "own to continue it: choose another --out"
        )
