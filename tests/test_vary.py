"""`compare --recipe demo --vary KEY=V1,V2`: a cross-validation per value, one row per value with its
spread, pooled score and paired test; the same command again reuses, resumes or refuses its runs."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from safetensors.numpy import load_file

from cli_helpers import run_main
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.models import load_model
from finetune.stats.bootstrap import headline_interval, headline_score
from finetune.stats.paired import paired_test
from finetune.vary import seeds_pooled

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FOLDS, VALUES = 3, ("1e-3", "3e-3")
TINY = ["train.max_steps=2", "train.batch_size=4", "data.num_workers=0", "data.max_tracks=5", "eval.durations=null"]


def vary_args(out: Path, root: Path, *extra: str, folds: int | None = FOLDS) -> list[str]:
    """The compare --vary command over train.lr on the tiny demo."""
    fold_args = ["--folds", str(folds)] if folds else []
    return [
        "compare",
        "--recipe",
        "demo",
        "--vary",
        f"train.lr={','.join(VALUES)}",
        *fold_args,
        "--seeds",
        "0",
        "--out",
        str(out),
        *TINY,
        f"data.root={root}",
        *extra,
    ]


def finished(out: Path) -> dict[Path, float]:
    """Each finished run folder under out, with its metrics.json's modification time."""
    return {p.parent: p.stat().st_mtime_ns for p in sorted(out.glob("*/*/metrics.json"))}


@pytest.fixture(scope="module")
def vary_run(synthetic_root, tmp_path_factory):
    """train.lr over 2 values x 3 folds x 1 seed, 2 steps a run: (folder, printed output, progress log)."""
    out = tmp_path_factory.mktemp("vary") / "lr"
    code, printed, log = run_main(vary_args(out, synthetic_root))
    assert code == 0
    return out, printed, log


def test_one_row_per_value_with_its_runs(vary_run):
    out, printed, log = vary_run
    summary = json.loads((out / "vary.json").read_text())
    assert summary["key"] == "train.lr" and [v["value"] for v in summary["values"]] == list(VALUES)
    assert "value 2/2 (train.lr=3e-3), run 3/3: fold 2, seed 0" in log
    markdown = (out / "vary.md").read_text()
    assert printed.endswith(markdown + f"written: {out / 'vary.md'}\n")
    for value in summary["values"]:
        assert value["folder"] == f"train.lr={value['value']}"
        scores = []
        for fold, run in enumerate(value["runs"]):
            assert run["run"] == f"{value['folder']}/fold{fold}-seed0"
            metrics = json.loads((out / run["run"] / "metrics.json").read_text())
            assert run["score"] == metrics["test"]["accuracy"]
            scores.append(run["score"])
        assert value["mean"] == pytest.approx(np.mean(scores)) and value["std"] == pytest.approx(np.std(scores, ddof=1))
        pooled = TrackPredictions.load(out / value["folder"] / "predictions" / "test-seed0.npz")
        assert value["pooled"]["value"] == pytest.approx(headline_score(pooled.probs, pooled.labels))
        assert value["pooled"]["tracks"] == len(pooled.ids) == FOLDS * 5
        first_run = out / value["runs"][0]["run"]
        stored = load_file(first_run / "model" / "model.safetensors")
        buffers = {name for name, _ in load_model(first_run / "model").model.named_buffers()}
        assert value["parameters"] == sum(t.size for n, t in stored.items() if n not in buffers)
        history = [json.loads((out / r["run"] / "log_history.json").read_text()) for r in value["runs"]]
        assert value["train_seconds"] == pytest.approx(np.mean([h[-1]["train_runtime"] for h in history]))
        assert value["eval_windows_per_second"] > 0
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {value['value']} |"))
        assert f"{value['mean']:.4f} ± {value['std']:.4f}" in row and f"{value['parameters']:,}" in row
    assert matplotlib.image.imread(out / "vary.png").ndim == 3
    assert "## Test tracks the runs disagree on most" in markdown


def test_paired_test_against_the_first_value(vary_run):
    out = vary_run[0]
    first, second = json.loads((out / "vary.json").read_text())["values"]
    assert first["paired_against_first"] is None
    pooled = [TrackPredictions.load(out / v["folder"] / "predictions" / "test-seed0.npz") for v in (first, second)]
    expected = json.loads(json.dumps(paired_test(pooled[1], pooled[0])))
    assert second["paired_against_first"] == [expected]  # the same computation, through JSON both ways
    row = next(line for line in (out / "vary.md").read_text().splitlines() if line.startswith("| 3e-3 |"))
    assert f"{expected['difference']:+.4f}" in row and f"({expected['b']} / {expected['c']})" in row
    assert "| 1e-3 |" in (out / "vary.md").read_text() and "| first |" in (out / "vary.md").read_text()


def test_the_same_command_again_reuses_every_run(vary_run, synthetic_root):
    out = vary_run[0]
    before, summary = finished(out), json.loads((out / "vary.json").read_text())
    assert len(before) == len(VALUES) * FOLDS
    start = time.monotonic()
    code, _, log = run_main(vary_args(out, synthetic_root))
    assert code == 0 and time.monotonic() - start < 60
    assert finished(out) == before
    assert log.count("kept the finished run") == len(before) and "step 1/2" not in log
    assert json.loads((out / "vary.json").read_text())["values"] == summary["values"]


def test_a_changed_setting_is_refused_naming_it(vary_run, synthetic_root, capsys):
    out = vary_run[0]
    before = finished(out)
    assert main(vary_args(out, synthetic_root, "train.weight_decay=0.01")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "train.lr=1e-3/fold0-seed0 holds a finished run" in err and "train.weight_decay" in err
    assert finished(out) == before


def test_a_run_stopped_after_its_checkpoint_is_resumed(vary_run, synthetic_root, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(vary_run[0], out)
    stopped = out / "train.lr=3e-3" / "fold1-seed0"
    (stopped / "metrics.json").unlink()
    before = finished(out)
    code, _, log = run_main(vary_args(out, synthetic_root))
    assert code == 0 and f"resuming {stopped}" in log
    resumes = json.loads((stopped / "run.json").read_text())["resumes"]
    assert [Path(r["from"]).name for r in resumes] == ["checkpoint-2"]
    after = finished(out)
    assert set(after) == set(before) | {stopped} and all(after[d] == t for d, t in before.items())


@pytest.mark.parametrize("bad", ["train.lr=1e-3,abc", "model.name=simple_cnn,nosuch"])
def test_a_bad_value_is_refused_before_any_run(bad, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["compare", "--recipe", "demo", "--vary", bad, "--folds", "3", "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --vary {bad.split('=')[0]}=")
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vary", "train.lr=1e-3"], "at least 2 values"),
        (["--vary", "train.lr=1e-3,0.001"], "set the same value"),
        (["--vary", "seed=1,2"], "sets seed"),
        (["--vary", "train.lr=1e-3,3e-3", "runs/a"], "not both: runs/a"),
        ([], "--recipe with --vary"),
    ],
)
def test_refusals(argv, message, capsys):
    assert main(["compare", "--recipe", "demo", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_killed_and_started_again_it_completes(synthetic_root, tmp_path):
    """Two runs (the dataset's own split): killed once the first is finished, the same command again
    keeps it and runs the other once."""
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "finetune", *vary_args(out, synthetic_root, folds=None)]
    first = out / f"train.lr={VALUES[0]}" / "seed0"
    process = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (first / "metrics.json").is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (first / "metrics.json").is_file()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished_first = (first / "metrics.json").stat().st_mtime_ns

    code, _, log = run_main(vary_args(out, synthetic_root, folds=None))
    assert code == 0 and log.count("kept the finished run") == 1
    assert (first / "metrics.json").stat().st_mtime_ns == finished_first
    summary = json.loads((out / "vary.json").read_text())
    assert [len(v["runs"]) for v in summary["values"]] == [1, 1]
    assert sorted(finished(out)) == [first, out / f"train.lr={VALUES[1]}" / "seed0"]


def test_seeds_are_pooled_by_track():
    """Two seeds on the same tracks: accuracy is their mean, and the interval resamples tracks (each
    with both seeds' predictions); one seed: the cross-validation's own pooled score and interval."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)  # (N,)
    ids = [f"t{i}" for i in range(40)]
    seeds = [TrackPredictions(ids, ids, rng.dirichlet(np.ones(3), 40), labels, ["a", "b", "c"]) for _ in range(2)]
    flipped = TrackPredictions(ids[::-1], ids[::-1], seeds[1].probs[::-1], labels[::-1], ["a", "b", "c"])
    value, (low, high) = seeds_pooled([seeds[0], flipped])
    assert value == pytest.approx(np.mean([headline_score(s.probs, labels) for s in seeds]))
    assert low < value < high
    assert seeds_pooled(seeds[:1]) == headline_interval(seeds[0], seed=0)
