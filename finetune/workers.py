"""Workers: the runs of one comparison (`cv`, `compare --vary`) shared by processes here and on other machines.

Each run folder is locked by the process training in it (`finetune.rundir.lock`: flock through
filelock, released by the OS when the process dies), so workers need no other coordination: each
goes through the planned runs, keeps a finished one, passes over one another process holds and
comes back for it, and runs or resumes the rest (`cv.run_or_reuse`: a run whose worker died is
resumed from its last checkpoint). A worker ends when every run is finished, so each one that ends
can write the comparison's table from the folders. `--jobs N` starts N-1 more workers of the same
command on this machine, each with its share of the CPU threads and, on a GPU machine, one GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from finetune.rundir import LOCK_FILE, RunFolderError, holds_run, is_finished

logger = logging.getLogger("finetune")

POLL_SECONDS = 3.0  # how often a worker looks again at the runs other processes hold
WORKER_ENV = "FINETUNE_WORKER"  # "k/N": which worker of `--jobs N` this process is
IN_USE = "is in use by another process"  # in `rundir.in_use_message`: the refusal of a held folder


class WorkerFailed(RuntimeError):
    """A worker process of `--jobs N` ended with an error (printed above by that worker)."""


def worker_prefix() -> str:
    """'worker k/N: ' in a worker of `--jobs N`, else ''."""
    name = os.environ.get(WORKER_ENV)
    return f"worker {name}: " if name else ""


def is_helper() -> bool:
    """True in workers 2..N of `--jobs N`, which leave the results to worker 1 (the command's own process)."""
    return os.environ.get(WORKER_ENV, "1/").split("/")[0] != "1"


def held_by_another(folder: Path) -> bool:
    """True while another process holds the run folder's lock (looked at without waiting)."""
    if not (folder / LOCK_FILE).is_file():
        return False
    peek = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        peek.acquire()
    except Timeout:
        return True
    peek.release()
    return False


def try_run(folder: Path, label: str, start: Callable[[], Path]) -> bool:
    """Run or reuse the run in `folder` by `start()` (logging `label`); False when another process
    holds it, or took it between our look and our lock: it is to be looked at again."""
    if not is_finished(folder) and held_by_another(folder):
        return False
    had_run = holds_run(folder)
    logger.info("%s%s", worker_prefix(), label)
    try:
        start()
    except RunFolderError as err:
        if IN_USE in str(err) or not had_run and holds_run(folder):
            logger.info("%s%s: taken by another process meanwhile", worker_prefix(), label)
            return False
        raise
    return True


def work_through(
    runs: list[tuple[Path, str, Callable[[], Path]]], after_run: Callable[[Path], None] | None = None
) -> None:
    """Each (folder, progress label, start) run or reused, in order; one another process holds is passed
    over and looked at again every POLL_SECONDS until it is finished or free (its holder died: then it
    is resumed here). `after_run(folder)` after each (it may raise to stop the rest)."""
    waiting, said = list(runs), []
    while waiting:
        held = []
        for folder, label, start in waiting:
            if try_run(folder, label, start):
                if after_run:
                    after_run(folder)
            else:
                held.append((folder, label, start))
        if held and held != said:
            logger.info(
                "%swaiting for %d run(s) other processes hold: %s",
                worker_prefix(),
                len(held),
                ", ".join(str(folder) for folder, _, _ in held),
            )
            said = held
        if held:
            time.sleep(POLL_SECONDS)
        waiting = held


def cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_threads(jobs: int) -> int:
    """Each worker's CPU threads: the cores divided among `jobs` workers, at least one each (said in one line)."""
    count = cores()
    threads = max(1, count // jobs)
    if jobs > count:
        logger.warning(
            "--jobs %d on %d cores: 1 thread per worker, so %d threads share the %d cores", jobs, count, jobs, count
        )
    else:
        logger.info("--jobs %d on %d cores: %d thread(s) per worker", jobs, count, threads)
    return threads


def visible_gpus() -> list[str]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES, else every one torch counts; none on a CPU machine)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]  # counts without initialising CUDA


def worker_settings(number: int, jobs: int, threads: int, gpus: list[str]) -> dict[str, str]:
    """The environment that makes a process worker `number` of `jobs`: its threads and (round-robin) GPU."""
    settings = {WORKER_ENV: f"{number}/{jobs}", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpus:
        settings["CUDA_VISIBLE_DEVICES"] = gpus[(number - 1) % len(gpus)]
    return settings


def start_worker(command: list[str], settings: dict[str, str]) -> subprocess.Popen:
    """`python -m finetune <command> --jobs 1` with `settings` in its environment; its table is not printed
    (this process prints it), its log goes to stderr."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "finetune", *command, "--jobs", "1"],
        env={**os.environ, **settings, "PYTHONPATH": path},
        stdout=subprocess.DEVNULL,
    )


def restore_environment(before: dict[str, str | None]) -> None:
    """Put the variables back as they were (None: unset)."""
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def workers(jobs: int, command: list[str]) -> Iterator[None]:
    """With `jobs` > 1: workers 2..N of `command` (the arguments after `python -m finetune`, with --out)
    started, this process made worker 1 for the block (its threads and GPU), the others waited for at
    its end; WorkerFailed when any of them failed. An error in the block stops them."""
    if jobs == 1:
        yield
        return
    import torch

    threads, gpus = share_threads(jobs), visible_gpus()
    others = [start_worker(command, worker_settings(n, jobs, threads, gpus)) for n in range(2, jobs + 1)]
    own = worker_settings(1, jobs, threads, gpus)
    before, threads_before = {key: os.environ.get(key) for key in own}, torch.get_num_threads()
    os.environ.update(own)
    torch.set_num_threads(threads)
    try:
        yield
    except BaseException:
        for process in others:
            process.terminate()
        raise
    finally:
        for process in others:
            process.wait()
        torch.set_num_threads(threads_before)
        restore_environment(before)
    failed = [
        f"worker {n}/{jobs} (pid {p.pid}) exited with status {p.returncode}"
        for n, p in enumerate(others, 2)
        if p.returncode
    ]
    if failed:
        raise WorkerFailed(f"{'; '.join(failed)}: its error is printed above")
