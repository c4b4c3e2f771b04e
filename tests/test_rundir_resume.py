"""A run interrupted (SIGKILL, or Ctrl-C) at a checkpoint and resumed ends bit-identical to an
uninterrupted one: the packaged demo as it is (random crops, 2 DataLoader workers, a plateau schedule),
mid-epoch and at an epoch boundary."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from cli_helpers import snapshot

# 12 training tracks x 3 crops at batch 12: 3 steps an epoch, so checkpoint-4 is mid-epoch and
# checkpoint-6 an epoch boundary
SETTINGS = [
    "train.max_steps=10",
    "train.save_steps=2",
    "train.batch_size=12",
    "data.max_tracks=12",
    "data.num_workers=2",
    "eval.durations=null",
]


def command(run_dir, synthetic_root, *extra):
    return [
        sys.executable,
        "-m",
        "finetune",
        "--recipe",
        "demo",
        *SETTINGS,
        f"data.root={synthetic_root}",
        f"output_dir={run_dir}",
        *extra,
    ]


def losses(run_dir):
    return [(e["step"], e["loss"]) for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, synthetic_root):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(command(run_dir, synthetic_root), check=True, capture_output=True)
    return run_dir


@pytest.mark.parametrize(
    "checkpoint, stop",
    [("checkpoint-4", signal.SIGKILL), ("checkpoint-6", signal.SIGINT)],
    ids=["sigkill-mid-epoch", "sigint-epoch-boundary"],
)
@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(tmp_path, synthetic_root, straight, checkpoint, stop):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "run"
    process = subprocess.Popen(
        command(killed, synthetic_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.time() + 300
    while not (killed / checkpoint / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, f"no {checkpoint} within 5 minutes"
        time.sleep(0.05)
    process.send_signal(stop)
    assert process.wait(timeout=120) != 0, "an interrupted run must not exit 0"
    assert not (killed / "metrics.json").exists(), "interrupted before the end"
    kept = snapshot(killed / checkpoint)

    resumed = subprocess.run(
        command(killed, synthetic_root, "train.resume=true"), capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {killed} from" in resumed.stderr
    if (killed / checkpoint).exists():  # (rotated away once two later checkpoints exist)
        assert snapshot(killed / checkpoint) == kept, f"{checkpoint} was rewritten: training restarted"

    want, got = (
        load_file(str(straight / "model" / "model.safetensors")),
        load_file(str(killed / "model" / "model.safetensors")),
    )
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), name
    assert json.loads((killed / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    for split in ("validation", "test"):
        a, b = np.load(straight / "predictions" / f"{split}.npz"), np.load(killed / "predictions" / f"{split}.npz")
        assert all(np.array_equal(a[key], b[key]) for key in a.files), split
    assert losses(killed) == losses(straight)
    resumes = json.loads((killed / "run.json").read_text())["resumes"]
    assert len(resumes) == 1 and resumes[0]["from"]
