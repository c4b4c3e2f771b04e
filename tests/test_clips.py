"""One windowed scorer: `predict` scores a file exactly as the run's evaluation scored it."""

import json

import numpy as np
import pytest

from finetune.cli import main
from finetune.clips import Windowing
from finetune.evaluation import TrackPredictions, aggregate_tracks
from finetune.predict import Predictor


@pytest.mark.slow
def test_predict_gives_every_test_file_its_row_of_the_run_predictions(demo_run, capsys):
    """The demo evaluates 3 s windows every 2.5 s, averaged: `predict` on each test file (through the
    command line) reproduces that file's row of predictions/test.npz."""
    test = TrackPredictions.load(demo_run / "predictions" / "test.npz")
    assert Predictor.from_pretrained(demo_run).windowing == Windowing(3.0, 2.5, "mean")
    capsys.readouterr()
    assert main(["predict", "--model", str(demo_run), "--top-k", str(len(test.label_names)), *test.paths]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == test.paths
    for line, row in zip(lines, test.probs):
        scores = {entry["label"]: entry["score"] for entry in line["labels"]}
        np.testing.assert_allclose([scores[name] for name in test.label_names], row, atol=2e-5)


@pytest.mark.slow
def test_aggregation_follows_the_windowing(demo_run):
    """A model saved with max aggregation scores a file by its most confident window per label."""
    predictor = Predictor.from_pretrained(demo_run)
    path = TrackPredictions.load(demo_run / "predictions" / "test.npz").paths[0]
    _, _, window_probs = predictor.window_scores(path)  # (W, C)
    assert len(window_probs) > 1
    predictor.windowing = Windowing(3.0, 2.5, "max")
    np.testing.assert_allclose(predictor.track_scores(window_probs), window_probs.max(axis=0))
    assert np.allclose(
        aggregate_tracks(window_probs, np.zeros(len(window_probs), dtype=int), "mean")[0], window_probs.mean(axis=0)
    )


@pytest.mark.slow
def test_eval_max_seconds_scores_a_tracks_first_seconds_and_travels_with_the_model(tmp_path, synthetic_root):
    capped = Windowing(3.0, None, "mean", 6.0)
    assert capped.starts(600.0) == [0.0, 3.0] and capped.starts(4.0) == Windowing(3.0).starts(4.0)
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=1",
                "train.batch_size=4",
                "data.max_tracks=4",
                "data.num_workers=0",
                "eval.durations=null",
                "eval.max_seconds=1.5",
                "data.clip_seconds=1",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["max_seconds"] == 1.5
    windowing = Predictor.from_pretrained(run_dir / "model").windowing
    assert windowing.max_seconds == 1.5 and windowing.starts(30.0) == [0.0, 0.5]
