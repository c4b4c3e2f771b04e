"""Every result belongs to exactly one run (finetune/rundir.py): exclusive, locked run folders, honest
resumes, and a run whose step after training fails does not exit 0. Real processes throughout."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from cli_helpers import snapshot
from finetune.recipe import load
from finetune.rundir import RunFolderError, changed_settings, claim, hold

QUICK = ["train.max_steps=2", "train.batch_size=4", "data.max_tracks=12", "data.num_workers=0", "eval.durations=null"]


def finetune(cwd, *args, env=None, **popen):
    """`python -m finetune ARGS` in `cwd` (started, not waited for), `env` added to the environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "finetune", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


UNREACHABLE_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_unused"}


def finished(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def printed_run(stdout: str) -> tuple[str, float]:
    """The run folder and test accuracy a run printed in its summary."""
    folder = next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("demo: "))
    test = next(line for line in stdout.splitlines() if line.strip().startswith("test "))
    return folder, float(test.split("accuracy ")[1].split()[0])


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tmp_path, synthetic_root):
    """Same recipe, same second, default folder names: two folders, each summary from its own run."""
    runs = [
        finetune(tmp_path, "--recipe", "demo", *QUICK, f"data.root={synthetic_root}", f"seed={seed}") for seed in (0, 1)
    ]
    results = [finished(run) for run in runs]
    folders = set()
    for seed, (code, out, err) in zip((0, 1), results):
        assert code == 0, err[-2000:]
        folder, accuracy = printed_run(out)
        folder = tmp_path / folder if not os.path.isabs(folder) else folder
        folders.add(str(folder))
        assert yaml.safe_load((folder / "recipe.yaml").read_text())["seed"] == seed
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["test"]["accuracy"] == pytest.approx(accuracy, abs=5e-5)
        assert json.loads((folder / "run.json").read_text())["pid"] == runs[seed].pid
    assert len(folders) == 2


@pytest.mark.slow
def test_second_process_on_the_same_output_dir_is_refused_at_once(tmp_path, synthetic_root):
    """While one run trains in a folder, a second process pointed at it is refused at once; the first
    run's folder stays its own."""
    run_dir = tmp_path / "run"
    first = finetune(
        tmp_path,
        "--recipe",
        "demo",
        *QUICK,
        "train.max_steps=100000",
        "train.save_steps=100000",
        f"data.root={synthetic_root}",
        f"output_dir={run_dir}",
    )
    try:
        deadline = time.time() + 300
        for line in first.stderr:  # the first run is training: it has held the folder for a while
            assert time.time() < deadline
            if line.startswith("step "):
                break
        started = time.time()
        code, out, err = finished(
            finetune(
                tmp_path, "--recipe", "demo", *QUICK, f"data.root={synthetic_root}", f"output_dir={run_dir}", "seed=1"
            )
        )
        assert first.poll() is None, "the first run was still training"
    finally:
        first.kill()
        first.communicate()
    assert code == 2 and time.time() - started < 60
    assert len(error_lines(err)) == 1 and "Traceback" not in err, err
    assert "in use by another process" in err and str(run_dir) in err and f"pid {first.pid}" in err
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["seed"] == 0
    assert json.loads((run_dir / "run.json").read_text())["pid"] == first.pid


@pytest.mark.slow
def test_a_new_run_never_replaces_a_finished_one(tmp_path, demo_run):
    before = snapshot(demo_run)
    code, out, err = finished(finetune(tmp_path, "--recipe", "demo", *QUICK, f"output_dir={demo_run}"))
    assert code == 2 and "Traceback" not in err
    assert "already holds a run from" in err and "train.resume=true continues it" in err
    assert snapshot(demo_run) == before


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_records_nothing(tmp_path, demo_run):
    before = snapshot(demo_run)
    code, out, err = finished(
        finetune(
            tmp_path,
            "--recipe",
            "demo",
            *QUICK,
            f"output_dir={demo_run}",
            "train.resume=true",
            "train.lr=0.01",
            "seed=3",
        )
    )
    assert code == 2 and len(error_lines(err)) == 1, err
    assert "train.lr" in err and "seed" in err and "train.batch_size" not in err
    assert snapshot(demo_run) == before


def test_which_settings_a_resume_may_change():
    recorded = load("demo", ["train.lr=0.002"])
    assert (
        changed_settings(
            recorded,
            load("demo", ["train.resume=true", "data.num_workers=3", "train.logging_steps=1", "eval.durations=[1.0]"]),
        )
        == ""
    )
    assert changed_settings(recorded, load("demo", ["train.resume=true", "train.lr=0.01", "data.clip_seconds=2"])) == (
        "data.clip_seconds 3.0 -> 2.0, train.lr 0.002 -> 0.01"
    )


def test_a_locked_folder_is_refused_in_process_too(tmp_path):
    recipe = load("demo", [f"output_dir={tmp_path / 'run'}"])
    with claim(recipe) as claimed:
        assert (claimed.path / "run.json").is_file()
        with pytest.raises(RunFolderError, match="in use by another process"):
            with claim(recipe):
                pass
        with pytest.raises(RunFolderError, match="in use"):
            with hold(claimed.path):
                pass


def test_a_run_refused_before_training_leaves_no_run_behind(tmp_path):
    """A new run that fails before its first checkpoint can be started again with the same command."""
    recipe = load("demo", [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(RuntimeError, match="data failed"):
        with claim(recipe):
            raise RuntimeError("data failed")
    assert not (tmp_path / "run").exists()
    with claim(recipe) as claimed:
        assert claimed.path == tmp_path / "run" and not claimed.resumed


@pytest.mark.slow
def test_a_failed_upload_keeps_the_results_and_exits_non_zero(tmp_path, synthetic_root):
    """A Hub endpoint nobody answers (a closed local port: no network is used) makes the upload fail
    after training (HF_HUB_OFFLINE=1 is refused before it, finetune.checks.check_hub_push)."""
    run_dir = tmp_path / "run"
    code, out, err = finished(
        finetune(
            tmp_path,
            "--recipe",
            "demo",
            *QUICK,
            f"data.root={synthetic_root}",
            f"output_dir={run_dir}",
            "hub.push_to_hub=true",
            "hub.repo_id=user/demo",
            env=UNREACHABLE_HUB,
        )
    )
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    assert any("could not push" in line and str(run_dir) in line for line in error_lines(err))
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.html").is_file()
    assert printed_run(out)[0] == str(run_dir)  # the summary is still printed, from this run


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_gets_one_line_and_leaves_no_run(tmp_path, synthetic_root, small_disk):
    run_dir = small_disk / "run"
    code, out, err = finished(
        finetune(
            tmp_path,
            "--recipe",
            "demo",
            *QUICK,
            "train.save_steps=1",
            f"data.root={synthetic_root}",
            f"output_dir={run_dir}",
        )
    )
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert error_lines(err) == [
        line
        for line in error_lines(err)
        if f"{run_dir}/checkpoint-1" in line and "could not write the checkpoint" in line and "No space left" in line
    ]
    assert len(error_lines(err)) == 1
    assert not run_dir.exists(), "a run that wrote no complete checkpoint leaves no folder behind"
