"""`cv`: every (fold, seed) run of the demo recipe, the summary that agrees with their metrics.json,
each seed's pooled test predictions, the same command again keeping its runs; `compare` of two demo
runs with its paired test."""

import json
import shutil

import numpy as np
import pytest

from cli_helpers import run_main
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.stats.bootstrap import headline_score
from finetune.stats.paired import paired_test

FOLDS, SEEDS, PER_SPLIT = 3, (0, 1), 5


def cv_args(out, root, *extra: str) -> list[str]:
    """The 3-fold x 2-seed cross-validation of the demo recipe, 2 steps per run on 5 tracks per split."""
    return [
        "cv",
        "--recipe",
        "demo",
        "--folds",
        str(FOLDS),
        "--seeds",
        "0,1",
        "--out",
        str(out),
        "train.max_steps=2",
        "train.batch_size=4",
        "data.num_workers=0",
        f"data.max_tracks={PER_SPLIT}",
        "eval.durations=null",
        f"data.root={root}",
        *extra,
    ]


@pytest.fixture(scope="module")
def cv_run(synthetic_root, tmp_path_factory):
    """The cross-validation of `cv_args`: (folder, printed output, progress log)."""
    out = tmp_path_factory.mktemp("cv") / "demo-cv"
    code, printed, log = run_main(cv_args(out, synthetic_root))
    assert code == 0
    return out, printed, log


@pytest.mark.slow
def test_one_run_per_fold_and_seed(cv_run):
    out, printed, log = cv_run
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["fold"], r["seed"]) for r in summary["runs"]] == [(f, s) for s in SEEDS for f in range(FOLDS)]
    assert "run 3/6: fold 2, seed 0" in log and "run 6/6: fold 2, seed 1" in log
    markdown = (out / "summary.md").read_text()
    for run in summary["runs"]:
        assert run["run"] == f"fold{run['fold']}-seed{run['seed']}"
        metrics = json.loads((out / run["run"] / "metrics.json").read_text())
        assert run["test"]["accuracy"] == metrics["test"]["accuracy"]
        assert run["validation"]["macro_f1"] == metrics["validation"]["macro_f1"]
        assert f"| {run['fold']} | {run['seed']} | {metrics['test']['accuracy']:.4f} |" in markdown
        assert f"[{run['run']}]({run['run']})" in markdown
    assert summary["headline"] == ["accuracy", "macro_f1"]
    assert "ddof=1" in summary["std"] and "ddof=1" in markdown
    assert printed.endswith(markdown + f"summary: {out / 'summary.md'}\n")


@pytest.mark.slow
def test_mean_and_std_agree_with_the_runs(cv_run):
    out = cv_run[0]
    summary = json.loads((out / "summary.json").read_text())
    for split in ("test", "validation"):
        runs = [json.loads((out / r["run"] / "metrics.json").read_text())[split] for r in summary["runs"]]
        aggregate = summary["mean_std"][split]
        assert {"accuracy", "macro_f1", "num_tracks"} <= set(aggregate)
        assert "per_class" not in aggregate and "confusion_matrix" not in aggregate
        for key, entry in aggregate.items():
            values = [m[key] for m in runs]
            assert entry["runs"] == len(runs) == FOLDS * len(SEEDS)
            assert entry["mean"] == pytest.approx(np.mean(values))
            assert entry["std"] == pytest.approx(np.std(values, ddof=1))
    accuracy = summary["mean_std"]["test"]["accuracy"]
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_pooled_predictions_hold_each_track_once_per_seed(cv_run):
    out = cv_run[0]
    summary = json.loads((out / "summary.json").read_text())
    assert [p["seed"] for p in summary["pooled"]] == list(SEEDS)
    for entry in summary["pooled"]:
        seed = entry["seed"]
        pooled = TrackPredictions.load(out / entry["file"])
        assert entry["file"] == f"predictions/test-seed{seed}.npz"
        runs = [TrackPredictions.load(out / f"fold{f}-seed{seed}" / "predictions" / "test.npz") for f in range(FOLDS)]
        expected = [track for run in runs for track in run.ids]
        assert len(expected) == FOLDS * PER_SPLIT
        assert sorted(pooled.ids) == sorted(expected) and len(set(pooled.ids)) == len(pooled.ids)
        assert entry["tracks"] == len(pooled.ids) and pooled.probs.shape == (len(pooled.ids), len(pooled.label_names))
        assert entry["metric"] == "accuracy"
        assert entry["value"] == pytest.approx(headline_score(pooled.probs, pooled.labels))
        low, high = entry["interval"]
        assert 0 <= low <= high <= 1


@pytest.mark.slow
def test_the_same_command_again_keeps_every_run(cv_run, synthetic_root, capsys):
    """Into its existing folder, cv keeps each finished run with the same settings (nothing retrains)
    and refuses one with other settings, naming the key, before anything runs."""
    out = cv_run[0]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    summary = json.loads((out / "summary.json").read_text())
    code, _, log = run_main(cv_args(out, synthetic_root))
    assert code == 0 and log.count("kept the finished run") == FOLDS * len(SEEDS) and "step 1/2" not in log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before
    assert json.loads((out / "summary.json").read_text()) == summary

    code, _, log = run_main(cv_args(out, synthetic_root, "train.lr=0.01"))
    assert code == 2 and "run 1/" not in log
    err = capsys.readouterr().err
    assert f"{out / 'fold0-seed0'} holds a finished run with other settings (train.lr 0.002 -> 0.01)" in err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before


def test_cv_refuses_settings_it_makes_itself(capsys):
    assert main(["cv", "--recipe", "demo", "--folds", "3", "seed=4"]) == 2
    assert "error: the cross-validation sets seed" in capsys.readouterr().err


def assert_close(got, want, where="result"):
    """Nested dicts and lists equal, numbers within pytest.approx (which takes no nested dict)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, f"{where}[{index}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want), where
    else:
        assert got == want, where


@pytest.mark.slow
def test_compare_adds_the_paired_test(cv_run, tmp_path, capsys):
    out = cv_run[0]
    first, second = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    shutil.copytree(out / "fold0-seed0", first)
    shutil.copytree(out / "fold0-seed0", second)
    ours = TrackPredictions.load(first / "predictions" / "test.npz")
    perfect = np.eye(ours.probs.shape[1])[ours.labels]  # (N, C) one-hot on the truth
    TrackPredictions(ours.ids, ours.paths, perfect, ours.labels, ours.label_names).save(
        second / "predictions" / "test.npz"
    )

    assert main(["compare", str(first), str(second), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "## Paired tests against runs/a" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| runs/b | accuracy |"))
    expected = paired_test(TrackPredictions.load(second / "predictions" / "test.npz"), ours)
    assert f"{expected['difference']:+.4f}" in row and f"{expected['b']} / {expected['c']}" in row
    assert expected["difference"] == pytest.approx(1 - headline_score(ours.probs, ours.labels))
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert written[0]["paired_test_against_first"] is None
    assert_close(written[1]["paired_test_against_first"], json.loads(json.dumps(expected)))

    (first / "predictions" / "test.npz").unlink()
    assert main(["compare", str(first), str(second), "--out", str(tmp_path / "cmp2")]) == 0
    printed = capsys.readouterr().out
    assert "the paired test needs every run's predictions/test.npz" in printed and "runs/a" in printed
    assert "| runs/b | accuracy |" not in printed


@pytest.mark.slow
def test_the_summary_names_classes_left_out_of_the_tests(tmp_path):
    """data.unsplittable=leave_out: a class of one artist is tested in no fold, which summary.md says."""
    from data_fixtures import write_audio

    root = tmp_path / "music"
    for name, artists in (("calm", 3), ("loud", 3), ("solo", 1)):
        for a in range(artists):
            for t in range(2):
                write_audio(
                    root / name / f"{name}-artist{a}" / f"{t}.wav", seconds=1.0, sample_rate=16000, seed=10 * a + t
                )
    out = tmp_path / "cv"
    code, printed, log = run_main(
        [
            "cv",
            "--recipe",
            "demo",
            "--folds",
            "3",
            "--out",
            str(out),
            "data.name=folder",
            f"data.root={root}",
            "data.unsplittable=leave_out",
            "train.max_steps=1",
            "train.batch_size=4",
            "data.num_workers=0",
            "eval.durations=null",
        ]
    )
    assert code == 0, log[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes_without_test_tracks"] == {"solo": 3} and summary["unsplittable"] == "leave_out"
    assert (
        "classes without test tracks: solo (3 of 3 runs); data.unsplittable=leave_out."
        in (out / "summary.md").read_text()
    )
