"""A run killed with SIGKILL mid-training resumes from its last checkpoint and ends where an
uninterrupted run with the same seed ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def command(run_dir, synthetic_root, *extra):
    return [sys.executable, "-m", "finetune", "--recipe", "demo", "train.max_steps=8",
            "train.save_steps=2", "train.save_total_limit=10", "train.batch_size=4",
            "train.logging_steps=1", "data.max_tracks=12", f"data.root={synthetic_root}", f"output_dir={run_dir}",
            "data.num_workers=0", *extra]


def snapshot(folder):
    """Every file of a checkpoint with its modification time and size."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_run_resumes_to_the_same_metrics(tmp_path, synthetic_root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = tmp_path / "straight"
    subprocess.run(command(straight, synthetic_root), check=True, capture_output=True, env=env)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed, synthetic_root), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (killed / "checkpoint-4" / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint-4 within 5 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists(), "killed before the end"

    kept = {name: snapshot(killed / name) for name in ("checkpoint-2", "checkpoint-4")}

    resumed = subprocess.run(command(killed, synthetic_root, "train.resume=true"),
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name, before in kept.items():
        assert snapshot(killed / name) == before, f"{name} was rewritten: training restarted from scratch"
    # One progress line per logged training step; a resumed process logs steps 5..8 only.
    logged = [line for line in resumed.stderr.splitlines() if line.startswith("step ") and ": loss " in line]
    assert len(logged) == 4, f"the resumed process trained {len(logged)} steps, not 5..8:\n" + "\n".join(logged)
    history = json.loads((killed / "log_history.json").read_text())
    assert sorted(e["step"] for e in history if "loss" in e) == list(range(1, 9)), \
        "one loss per step 1..8: steps 1-4 from the checkpoint, 5-8 from the resumed process"
    expected = json.loads((straight / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1"):
            assert got[split][key] == pytest.approx(expected[split][key], abs=1e-6), (split, key)
    straight_losses = {e["step"]: e["loss"] for e in json.loads(
        (straight / "log_history.json").read_text()) if "loss" in e}
    resumed_losses = {e["step"]: e["loss"] for e in history if "loss" in e and e["step"] > 4}
    for step, loss in resumed_losses.items():
        assert loss == pytest.approx(straight_losses[step], rel=1e-4), step
