"""A run that has ended stays ended (issue 27): a resume of a finished run changes nothing and says
so; a resume from the checkpoint taken at the last step (a run killed during its end-of-run scoring)
only finishes the run, bit-identical to the uninterrupted one, also for a fold of `cv`; a damaged
newest checkpoint is passed over, saying so; a resumed run's final train_loss and train_runtime
cover the whole training; the lock names the process that holds it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from cli_helpers import run_main
from finetune.rundir import HOLDER_FILE, hold, in_use_message

SETTINGS = [
    "train.max_steps=4",
    "train.save_steps=2",
    "train.save_total_limit=10",
    "train.batch_size=4",
    "data.max_tracks=8",
    "data.num_workers=0",
    "eval.durations=null",
]
# what a run writes after its last checkpoint: removing it leaves the folder as a kill during scoring does
RESULTS = ("metrics.json", "model", "predictions", "log_history.json", "report.html", "report.md", "studies", "plots")


def demo(run_dir, root, *extra):
    return run_main(["--recipe", "demo", *SETTINGS, f"data.root={root}", f"output_dir={run_dir}", *extra])


def files(folder):
    """Every file under `folder` (the lock files aside) with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".lock")
    }


def killed_while_scoring(finished, target):
    """A copy of the finished run as a kill between its last checkpoint and metrics.json leaves it."""
    shutil.copytree(finished, target)
    for name in RESULTS:
        path = target / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return target


def assert_same_results(a, b):
    weights_a, weights_b = (
        load_file(str(a / "model" / "model.safetensors")),
        load_file(str(b / "model" / "model.safetensors")),
    )
    assert weights_a.keys() == weights_b.keys()
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a), "the weights differ"
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    for split in ("validation", "test"):
        pa, pb = np.load(a / "predictions" / f"{split}.npz"), np.load(b / "predictions" / f"{split}.npz")
        assert np.array_equal(pa["probs"], pb["probs"])


def trained_steps(run_dir):
    return [e["step"] for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e]


@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ended") / "run"
    code, _, _ = demo(run_dir, synthetic_root)
    assert code == 0
    return run_dir


def test_a_resume_of_a_finished_run_changes_nothing_and_says_so(finished, synthetic_root):
    before = files(finished)
    code, printed, log = demo(finished, synthetic_root, "train.resume=true")
    assert code == 0
    assert f"{finished} holds a finished run: train.resume=true has nothing to do" in log
    assert "test" in printed  # the summary of the results as they are
    assert files(finished) == before, "a finished run's files are rewritten"


def test_a_resume_from_the_last_step_only_finishes_the_run(finished, synthetic_root, tmp_path):
    stopped = killed_while_scoring(finished, tmp_path / "run")
    code, _, log = demo(stopped, synthetic_root, "train.resume=true")
    assert code == 0
    assert "checkpoint-4 was taken when training ended: finishing the run (no further step)" in log
    assert "step 5" not in log
    assert_same_results(finished, stopped)
    assert trained_steps(stopped) == trained_steps(finished)
    ends = [json.loads((d / "log_history.json").read_text())[-1] for d in (finished, stopped)]
    assert ends[0]["step"] == ends[1]["step"] == 4
    assert ends[0]["train_loss"] == ends[1]["train_loss"]


def test_a_resumed_run_reports_the_whole_training(finished, synthetic_root, tmp_path):
    """From checkpoint-2: train_loss averages all 4 steps as uninterrupted, train_runtime counts the
    seconds before the checkpoint too."""
    stopped = killed_while_scoring(finished, tmp_path / "run")
    shutil.rmtree(stopped / "checkpoint-4")
    before = json.loads((stopped / "checkpoint-2" / "running_loss.json").read_text())["train_seconds"]
    assert demo(stopped, synthetic_root, "train.resume=true")[0] == 0
    assert_same_results(finished, stopped)
    end, uninterrupted = (json.loads((d / "log_history.json").read_text())[-1] for d in (stopped, finished))
    assert end["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-6)
    assert end["train_runtime"] >= before > 0


def test_a_damaged_newest_checkpoint_is_passed_over_saying_so(finished, synthetic_root, tmp_path):
    stopped = killed_while_scoring(finished, tmp_path / "run")
    optimizer = stopped / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    code, _, log = demo(stopped, synthetic_root, "train.resume=true")
    assert code == 0
    assert f"{stopped / 'checkpoint-4'} is damaged (optimizer.pt:" in log
    assert "resuming from the checkpoint before it" in log
    assert f"resuming {stopped} from {stopped / 'checkpoint-2'}" in log
    assert_same_results(finished, stopped)


def test_a_resume_keeps_the_creator_in_run_json_and_the_lock_names_its_holder(finished, synthetic_root, tmp_path):
    stopped = killed_while_scoring(finished, tmp_path / "run")
    created = json.loads((stopped / "run.json").read_text())
    assert demo(stopped, synthetic_root, "train.resume=true")[0] == 0
    identity = json.loads((stopped / "run.json").read_text())
    assert identity["pid"] == created["pid"] and identity["resumes"][-1]["from"].endswith("checkpoint-4")
    assert not (stopped / HOLDER_FILE).exists(), "the holder's record goes with the lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from finetune.rundir import hold\n"
            f"with hold({str(stopped)!r}, 'evaluate'):\n print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        message = in_use_message(stopped)
        assert f"pid {holder.pid} " in message and "evaluate" in message
        with pytest.raises(ValueError, match=f"in use by another process \\(pid {holder.pid} "):
            with hold(stopped):
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_cv_fold_killed_while_scoring_ends_as_uninterrupted(synthetic_root, tmp_path):
    args = [
        "cv",
        "--recipe",
        "demo",
        "--folds",
        "3",
        "--seeds",
        "0",
        "train.max_steps=2",
        "train.save_steps=2",
        "train.batch_size=4",
        "data.num_workers=0",
        "data.max_tracks=5",
        "eval.durations=null",
        f"data.root={synthetic_root}",
    ]
    straight = tmp_path / "straight"
    assert run_main([*args[:5], "--out", str(straight), *args[5:]])[0] == 0
    rerun = tmp_path / "rerun"
    shutil.copytree(straight, rerun)
    for name in ("summary.json", "summary.md"):
        (rerun / name).unlink(missing_ok=True)
    shutil.rmtree(rerun / "fold1-seed0")
    killed_while_scoring(straight / "fold1-seed0", rerun / "fold1-seed0")
    code, _, log = run_main([*args[:5], "--out", str(rerun), *args[5:]])
    assert code == 0
    assert "checkpoint-2 was taken when training ended" in log
    assert_same_results(straight / "fold1-seed0", rerun / "fold1-seed0")
    pooled = [json.loads((d / "summary.json").read_text())["pooled"] for d in (straight, rerun)]
    assert pooled[0] == pooled[1]
