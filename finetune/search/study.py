"""The study of a search: what its trials share, where it is stored, the sampler, and the worker locks
that tell a trial left running by a dead process from one still running."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from filelock import FileLock, Timeout
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from finetune.folders import JOURNAL_FILE
from finetune.search.space import SearchError

logger = logging.getLogger("finetune")

WORKERS_DIR = ".workers"  # each search process's lock, held while it searches
CLAIM_LOCK = "claim.lock"  # in WORKERS_DIR: held while a process counts the trials and starts one
ABANDONED = "abandoned: its search process ended before the trial did (not counted)"


@dataclass(frozen=True)
class Search:
    """What every trial of a search shares."""

    recipe: str
    overrides: list[str]
    space: dict[str, BaseDistribution]
    out: Path
    folds: int | None
    seed: int
    metric: str
    greater: bool

    def identity(self) -> dict:
        """What the study records and a resumed search must match."""
        return {
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "folds": self.folds,
            "space": {key: json.loads(distribution_to_json(d)) for key, d in self.space.items()},
        }


def shown(url: str) -> str:
    """An RDB URL as an error line may show it: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """The database at `url`, opened now: a driver that is not installed, or a database that cannot be
    opened or written (a sqlite file in a missing or read-only folder), is refused in one line."""
    try:
        return optuna.storages.RDBStorage(url)
    except ImportError as err:  # optuna's, raised from the driver's ModuleNotFoundError
        driver = getattr(err.__cause__, "name", None) or "module"
        raise SearchError(
            f"--storage {shown(url)}: its database driver ({driver}) is not installed; install it, "
            "or give a journal file instead"
        ) from None
    except SQLAlchemyError as err:
        problem = " ".join(str(getattr(err, "orig", None) or err).split())
        raise SearchError(
            f"--storage {shown(url)}: cannot be opened ({problem}); a sqlite file needs a folder that "
            "exists and can be written, a server URL a server that answers"
        ) from None


def storage_of(out: Path, storage: str | None):
    """An RDB URL's database, else a journal file (default OUT/journal.log)."""
    if storage and "://" in storage:
        return rdb_storage(storage)
    path = Path(storage).expanduser() if storage else out / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def open_study(search: Search, storage: str | None, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The search folder's study, created or continued; refused when it was started with other settings.
    TPE is seeded per trial (TrialSeededTPE)."""
    study = optuna.create_study(
        storage=storage_of(search.out, storage),
        study_name=search.out.resolve().name,
        direction="maximize" if search.greater else "minimize",
        pruner=pruner,
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", search.identity())
    elif recorded != search.identity():
        changed = [key for key in recorded if recorded[key] != search.identity().get(key)]
        raise SearchError(
            f"{search.out}: its study was started with other settings ({', '.join(changed)}); "
            "run the same command to continue it, or give another --out"
        )
    study.sampler = TrialSeededTPE(search.seed)
    return study


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE seeded afresh for each trial from (the search seed, the trial's number). Trial numbers are
    unique in a study, so processes that start together on one study never draw the same settings (one
    TPE seeded per process would: the same seed and history give the same draw), a resumed search draws
    new ones, and a fresh search is reproducible. The pair goes through numpy's SeedSequence: seeding
    with seed + number made neighbouring streams (Mersenne Twister seeds 0 and 3 start 0.549, 0.715
    and 0.551, 0.708) draw near-identical settings."""

    def __init__(self, seed: int):
        self.seed = seed
        self.tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        stream = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
        self.tpe = optuna.samplers.TPESampler(seed=stream)
        self.tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict:
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ):
        return self.tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.tpe.after_trial(study, trial, state, values)


@contextlib.contextmanager
def worker_lock(out: Path) -> Iterator[str]:
    """This process's lock file (absolute path), held while it searches: a running trial whose
    worker's lock is free was left by a process that died."""
    path = out.resolve() / WORKERS_DIR / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(path), timeout=0)
    held.acquire()
    try:
        yield str(path)
    finally:
        held.release()


def worker_alive(path: str) -> bool:
    """False when the worker's lock file is there and free; a file this host cannot see: alive."""
    if not Path(path).is_file():
        return True
    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def fail_abandoned(study: optuna.Study) -> None:
    """Mark FAIL (without an error: not counted) each running trial whose process died."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker and not worker_alive(worker):
            logger.warning("trial %d: %s", trial.number, ABANDONED)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ended on their own: complete, pruned, or failed with their error."""
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return [t for t in ended if t.state != TrialState.FAIL or "error" in t.user_attrs]


def to_start(study: optuna.Study, trials: int) -> tuple[int, str]:
    """(trials still to start for `trials` in all, where the count stands in words). A trial another
    process is running will most likely be counted, so none is started for it: a search does not
    overshoot (if that process dies, its trial is abandoned and the same command again makes it up)."""
    done = len(counted(study))
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    elsewhere = f", {running} running in other processes" if running else ""
    return max(trials - done - running, 0), f"{done} of {trials} trials counted{elsewhere}"


def claim_trial(study: optuna.Study, out: Path, trials: int) -> optuna.Trial | None:
    """The next trial, started (RUNNING) while no other process of the search counts or starts one (a
    lock in the search folder), so that the processes stop at `trials` in all; None when none is to
    start."""
    with FileLock(str(out.resolve() / WORKERS_DIR / CLAIM_LOCK)):
        return study.ask() if to_start(study, trials)[0] else None


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def trial_folder(number: int) -> str:
    return f"trial-{number:04d}"
