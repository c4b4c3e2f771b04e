"""Studies on a briefly trained demo run through the real commands: evaluate (test predictions,
rare classes, mistakes, durations), evaluate --on another dataset, explain."""

import json
import shutil

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf

from finetune import explain
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.scoring import RunModel
from finetune.studies import evaluate


@pytest.fixture(scope="module")
def trained_run(synthetic_root, tmp_path_factory):
    """Fifteen steps of the demo recipe: well above chance on the generated test split."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=15",
                "train.batch_size=16",
                "train.lr=0.003",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    return run_dir


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    """A copy of the trained run after `evaluate --durations 1,3,10 --explain 1` (coarse saliency)."""
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(trained_run, run_dir)
    evaluate(run_dir, durations=[1, 3, 10], explain=1, saliency_grid=(4, 2.0))
    return run_dir


def test_rescored_test_predictions_reproduce_the_run_metrics(evaluated_run):
    metrics = json.loads((evaluated_run / "metrics.json").read_text())["test"]
    predictions = TrackPredictions.load(evaluated_run / "predictions" / "test.npz")
    assert len(predictions.ids) == metrics["num_tracks"] == 30
    assert np.allclose(predictions.probs.sum(axis=1), 1.0)
    assert (predictions.probs.argmax(1) == predictions.labels).mean() == pytest.approx(metrics["accuracy"])


def test_duration_study_has_a_row_per_duration_and_stays_above_chance(evaluated_run):
    study = json.loads((evaluated_run / "studies" / "durations.json").read_text())["data"]
    assert [row["duration"] for row in study["rows"]] == [1, 3, 10]
    metrics = json.loads((evaluated_run / "metrics.json").read_text())["test"]
    assert study["full"]["accuracy"] == pytest.approx(metrics["accuracy"])
    chance = study["chance"]["accuracy"]
    assert chance == pytest.approx(1 / 6) and study["full"]["accuracy"] > 0.6
    longest = study["rows"][-1]
    assert longest["seconds"] == pytest.approx(8.0), "10 s keeps the whole 8 s track"
    assert longest["start"]["accuracy"] == pytest.approx(study["full"]["accuracy"])
    for row in study["rows"][1:]:
        assert row["start"]["accuracy"] > 2 * chance and row["random"]["accuracy"] > 2 * chance
    assert matplotlib.image.imread(evaluated_run / "studies" / "durations.png").shape[2] in (3, 4)


def test_study_sections_reach_both_reports(evaluated_run):
    md = (evaluated_run / "report.md").read_text()
    for title in ("Input duration", "Rare classes", "Most confidently wrong test tracks", "test 95% CI"):
        assert title in md
    assert "![durations](studies/durations.png)" in md
    html = (evaluated_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # curves, confusion, durations, rare classes
    rare = json.loads((evaluated_run / "studies" / "rare_classes.json").read_text())["data"]
    # bells buzz drone harp pluck pulse: 70% of 25 35 45 15 20 60 generated tracks
    assert [c["train"] for c in rare["classes"]] == [17, 25, 31, 11, 14, 42] and -1 <= rare["spearman"] <= 1
    mistakes = json.loads((evaluated_run / "studies" / "mistakes.json").read_text())["data"]["mistakes"]
    assert all(m["true"] != m["predicted"] for m in mistakes)
    assert len(list((evaluated_run / "studies" / "saliency").glob("*.png"))) == min(1, len(mistakes))


def test_evaluate_on_another_dataset_through_a_mapping(trained_run, synthetic_root, tmp_path, capsys):
    """Generated classes filed under GTZAN genre names: the mapping recovers them, drone has no
    counterpart, and the jazz folder (no source class maps to it) is left out and counted."""
    folders = {"bells": "classical", "buzz": "rock", "pulse": "hiphop", "drone": "jazz"}
    for source, genre in folders.items():
        (tmp_path / "gtzan" / genre).mkdir(parents=True)
        for i in range(4):
            shutil.copy(
                synthetic_root / "genres" / source / f"{source}.{i:05d}.wav",
                tmp_path / "gtzan" / genre / f"{genre}.{i:05d}.wav",
            )
    mapping = tmp_path / "map.yaml"
    mapping.write_text("bells: classical\nbuzz: rock\npulse: hiphop\ndrone: null\npluck: country\nharp: country\n")
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                "--on",
                "gtzan",
                f"data.root={tmp_path / 'gtzan'}",
                "data.split_scheme=random",
                "data.group_by=none",
                "--mapping",
                str(mapping),
                "--split",
                "train",
            ]
        )
        == 0
    )  # group_by=none: generated clips under real GTZAN names have no artist
    result = json.loads((run_dir / "studies" / "cross_gtzan_train.json").read_text())["data"]
    assert result["covered"] == ["classical", "country", "hiphop", "rock"]
    assert result["unmapped_source"] == ["drone"]
    metrics = result["metrics"]
    assert metrics["left_out_tracks"]["jazz"] == 2 and metrics["left_out_tracks"]["blues"] == 0
    assert metrics["num_tracks"] == 6 and metrics["accuracy"] >= 0.5
    assert "Cross-dataset: gtzan (train)" in (run_dir / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--on", "fma", f"data.root={tmp_path}"]) == 2
    assert "no packaged genre mapping from synthetic to fma" in capsys.readouterr().err


def test_saliency_is_zero_where_the_audio_is_silent(trained_run):
    model = RunModel(trained_run)  # the 2-step demo run can be certain of one class on a tone: nothing to occlude
    rate = model.sample_rate
    t = np.arange(4 * rate) / rate
    y = np.where(t < 2.0, 0.5 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t), 0.0).astype(np.float32)
    saliency = explain.occlusion_saliency(model, y, target=0, bands=4, segment_seconds=1.0)
    assert saliency.values.shape == (4, 4)
    # the segment from 3 s: its STFT frames (and n_fft / 2 around them) hold zeros only
    assert np.abs(saliency.values[:, 3]).max() < 1e-6
    assert np.abs(saliency.values[:, :2]).max() > 1e-5
    assert saliency.log_mel.shape[0] == 4 * explain.MELS_PER_BAND


def test_explain_command_writes_a_png_of_the_set_size(demo_run, synthetic_root, tmp_path, capsys):
    out = tmp_path / "saliency.png"
    track = synthetic_root / "genres" / "pulse" / "pulse.00000.wav"
    assert (
        main(
            [
                "explain",
                str(demo_run),
                str(track),
                "--out",
                str(out),
                "--bands",
                "4",
                "--segment-seconds",
                "2",
                "--label",
                "drone",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["label"] == "drone" and printed["image"] == str(out)
    width, height = explain.FIGSIZE
    assert matplotlib.image.imread(out).shape[:2] == (height * explain.DPI, width * explain.DPI)
    sf.write(tmp_path / "blip.wav", np.zeros(100, dtype=np.float32), 16000)
    assert main(["explain", str(demo_run), str(tmp_path / "blip.wav"), "--out", str(out)]) == 2
    assert "too short to explain" in capsys.readouterr().err


def test_the_rare_class_figure_draws_a_split_where_no_tag_could_be_scored():
    """A small tagging test split where no tag has both a positive and a negative track: no class."""
    from finetune.studies.rare import rare_class_figure

    assert rare_class_figure({"classes": [], "spearman": None, "score": "roc_auc"}).axes
