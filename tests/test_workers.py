"""Workers of one cross-validation (`cv --jobs N`, `finetune.workers`): two processes train each run once and
write the one-worker table; a worker killed mid-run leaves its run to another, which resumes it; two
commands started on one folder (as two machines would) cooperate; `--jobs` beyond the cores says how
the threads were divided."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import torch

from cli_helpers import run_main
from conftest import PROJECT_ROOT
from finetune.evaluation import TrackPredictions
from finetune.rundir import is_finished, last_checkpoint

FOLDS = 3


def cv_args(out, root, seeds: str = "0,1", *extra: str) -> list[str]:
    """The 3-fold cross-validation of the demo recipe, 2 steps per run on 5 tracks per split."""
    return [
        "cv",
        "--recipe",
        "demo",
        "--folds",
        str(FOLDS),
        "--seeds",
        seeds,
        "--out",
        str(out),
        "train.max_steps=2",
        "train.batch_size=4",
        "data.num_workers=0",
        "data.max_tracks=5",
        "eval.durations=null",
        f"data.root={root}",
        *extra,
    ]


def command(argv: list[str], **popen) -> subprocess.Popen:
    """`python -m finetune argv` in its own process, as another machine would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "finetune", *argv],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def identities(out) -> dict[str, dict]:
    return {d.name: json.loads((d / "run.json").read_text()) for d in sorted(out.glob("fold*-seed*"))}


def assert_same_table(out, expected) -> None:
    """The summaries agree: each run's metrics and each seed's pooled test predictions."""
    ours, theirs = (json.loads((o / "summary.json").read_text()) for o in (out, expected))
    assert [r["run"] for r in ours["runs"]] == [r["run"] for r in theirs["runs"]]
    for mine, other in zip(ours["runs"], theirs["runs"]):
        for split in ("test", "validation"):
            assert mine[split] == other[split]
    for pooled in theirs["pooled"]:
        a, b = (TrackPredictions.load(o / pooled["file"]) for o in (out, expected))
        assert a.ids == b.ids
        np.testing.assert_array_equal(a.probs, b.probs)


@pytest.fixture(scope="module")
def one_worker(synthetic_root, tmp_path_factory):
    """The cross-validation by one worker, with one thread: each of two workers on this 2-core machine gets one,
    and sums in the same order."""
    out, threads = tmp_path_factory.mktemp("one") / "cv", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_main(cv_args(out, synthetic_root))[0] == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def two_cores():
    """This process (and what it starts) on two cores: two workers get one thread each."""
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    os.sched_setaffinity(0, sorted(cores)[:2])
    yield set(sorted(cores)[:2])
    os.sched_setaffinity(0, cores)


@pytest.mark.slow
def test_two_workers_train_each_run_once_and_write_the_one_worker_table(
    one_worker, synthetic_root, tmp_path, two_cores
):
    out = tmp_path / "cv"
    code, printed, log = run_main([*cv_args(out, synthetic_root), "--jobs", "2"])
    assert code == 0
    found = identities(out)
    assert len(found) == 2 * FOLDS and all((out / name / "metrics.json").is_file() for name in found)
    assert not any(identity["resumes"] for identity in found.values())  # each trained once, by one worker
    assert len({identity["pid"] for identity in found.values()}) == 2
    assert "worker 1/2: run 1/6: fold 0, seed 0" in log
    assert_same_table(out, one_worker)
    assert printed.endswith((out / "summary.md").read_text() + f"summary: {out / 'summary.md'}\n")


def stopped_run_with_checkpoint(out, worker: subprocess.Popen):
    """The folder where `worker` is running, once it holds a checkpoint and no results yet."""
    deadline = time.time() + 300
    while time.time() < deadline and worker.poll() is None:
        for folder in out.glob("fold*-seed*"):
            if (folder / ".lock.json").is_file() and last_checkpoint(folder) and not is_finished(folder):
                return folder
        time.sleep(0.02)
    pytest.fail(f"the worker never held a run with a checkpoint: {worker.communicate()}")


@pytest.mark.slow
def test_a_run_whose_worker_was_killed_is_resumed_by_another(synthetic_root, tmp_path):
    out = tmp_path / "cv"
    argv = cv_args(out, synthetic_root, "0", "train.max_steps=4", "train.eval_steps=1", "train.save_steps=1")
    worker = command(argv)
    folder = stopped_run_with_checkpoint(out, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert not (folder / "metrics.json").is_file()
    code, _, log = run_main(argv)
    assert code == 0
    resumes = identities(out)[folder.name]["resumes"]
    assert [r["pid"] for r in resumes] == [os.getpid()] and "checkpoint-" in resumes[0]["from"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["run"] for r in summary["runs"]] == [f"fold{f}-seed0" for f in range(FOLDS)]


@pytest.mark.slow
def test_two_commands_on_one_folder_cooperate(synthetic_root, tmp_path):
    out = tmp_path / "cv"
    machines = [command(cv_args(out, synthetic_root, "0")) for _ in range(2)]
    printed = [machine.communicate() for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], printed
    found = identities(out)
    assert len(found) == FOLDS and not any(identity["resumes"] for identity in found.values())
    assert {identity["pid"] for identity in found.values()} == {machine.pid for machine in machines}
    table = (out / "summary.md").read_text()
    assert [stdout for stdout, _ in printed] == [table + f"summary: {out / 'summary.md'}\n"] * 2


@pytest.mark.slow
def test_more_jobs_than_cores_says_how_the_threads_were_divided(one_worker, synthetic_root, two_cores):
    table = (one_worker / "summary.md").read_text()
    worker = command([*cv_args(one_worker, synthetic_root), "--jobs", "3"])
    stdout, stderr = worker.communicate()
    assert worker.returncode == 0, stderr
    assert "--jobs 3 on 2 cores: 1 thread per worker, so 3 threads share the 2 cores" in stderr
    assert "worker 3/3: run 6/6: fold 2, seed 1" in stderr
    assert (one_worker / "summary.md").read_text() == table  # written again by each worker, the same


def search_args(out, root, trials: int, space, *extra: str) -> list[str]:
    """A search of the demo recipe's learning rate, 2 steps per trial on 5 tracks per split."""
    return [
        "search",
        "--recipe",
        "demo",
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--out",
        str(out),
        "train.max_steps=2",
        "train.batch_size=4",
        "data.num_workers=0",
        "data.max_tracks=5",
        "eval.durations=null",
        f"data.root={root}",
        *extra,
    ]


@pytest.fixture
def lr_space(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    return space


@pytest.mark.slow
def test_two_search_workers_share_one_study_and_stop_at_the_asked_trials(synthetic_root, tmp_path, lr_space, two_cores):
    out = tmp_path / "search"
    code, printed, log = run_main([*search_args(out, synthetic_root, 4, lr_space), "--jobs", "2"])
    assert code == 0, log[-3000:]
    study = optuna.load_study(
        study_name=out.name,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "journal.log"))),
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4  # 4 in all, not 4 per worker
    folders = sorted(out.glob("trial-*"))
    assert [f.name for f in folders] == [f"trial-{n:04d}" for n in range(4)]
    found = [json.loads((folder / "run.json").read_text()) for folder in folders]
    assert not any(identity["resumes"] for identity in found)  # each trial folder written once
    assert len({identity["pid"] for identity in found}) == 2  # by both workers
    markdown = (out / "trials.md").read_text()
    assert all(f"[{folder.name}]({folder.name})" in markdown for folder in folders)
    assert "--jobs 2 on 2 cores: 1 thread(s) per worker" in log and "worker 1/2: trial " in log
    assert printed.count("search demo: 4 trials (4 complete)") == 1  # one summary, by this process


@pytest.mark.slow
def test_more_search_jobs_than_cores_says_how_the_threads_were_divided(synthetic_root, tmp_path, lr_space, two_cores):
    out = tmp_path / "search"
    worker = command([*search_args(out, synthetic_root, 3, lr_space), "--jobs", "3"])
    stdout, stderr = worker.communicate()
    assert worker.returncode == 0, stderr[-3000:]
    assert "--jobs 3 on 2 cores: 1 thread per worker, so 3 threads share the 2 cores" in stderr
    assert stdout.startswith("search demo: 3 trials (3 complete)")
    assert len(list(out.glob("trial-*/metrics.json"))) == 3


def load_entries(folder, paths, barrier, seen) -> None:
    """One worker's reads through the shared audio cache, started with the other's: each entry's inode as
    this worker found it right after its load (a decode writes a new file, renamed over the entry)."""
    from finetune.clips import AudioCache

    cache, tracks = AudioCache(folder, 8000), []
    barrier.wait()
    for path in paths:
        tracks.append(cache.load(path))  # kept open: an inode is not reused while a map holds it
        seen.put((path, os.stat(cache.entry(path)).st_ino))
    barrier.wait()


def test_two_workers_sharing_the_audio_cache_decode_each_file_once(tmp_path):
    import multiprocessing

    import soundfile as sf

    rng = np.random.default_rng(0)
    paths = [str(tmp_path / f"track{n}.wav") for n in range(12)]
    for path in paths:
        sf.write(path, rng.uniform(-0.5, 0.5, 44100 * 4).astype(np.float32), 44100)
    context = multiprocessing.get_context("fork")
    barrier, seen = context.Barrier(2), context.Queue()
    workers = [context.Process(target=load_entries, args=(tmp_path / "cache", paths, barrier, seen)) for _ in range(2)]
    for worker in workers:
        worker.start()
    found = [seen.get(timeout=120) for _ in range(2 * len(paths))]
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    inodes = {path: {inode for seen_path, inode in found if seen_path == path} for path in paths}
    assert all(len(found_inodes) == 1 for found_inodes in inodes.values()), inodes  # one decode each
