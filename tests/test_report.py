"""The end-of-run report: intervals, published results, per-class / per-tag content, study sections."""

import json
import subprocess
import sys

import numpy as np
import pytest

from finetune import recipe as recipes
from finetune.evaluation import TrackPredictions, classification_metrics, tagging_metrics
from finetune.report import Section, refresh, save_study, write_reports

HISTORY = [{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5, "eval_accuracy": 0.5}]


def genre_results(rng):
    labels = rng.integers(0, 10, 290)
    probs = rng.random((290, 10)) + 2 * np.eye(10)[labels] * rng.random((290, 1))
    names = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    return {"test": classification_metrics(probs / probs.sum(1, keepdims=True), labels, names)}


def test_genre_report_has_intervals_published_scores_and_classes(tmp_path):
    results = genre_results(np.random.default_rng(0))
    recipe = recipes.from_dict({"name": "cnn_gtzan", "data": {"name": "gtzan"}})
    write_reports(tmp_path, recipe, results, HISTORY)
    md = (tmp_path / "report.md").read_text()
    accuracy_row = next(line for line in md.splitlines() if line.startswith("| accuracy |"))
    low, high = (float(v) for v in accuracy_row.split("[")[1].split("]")[0].split(","))
    assert low < results["test"]["accuracy"] < high
    assert "## Published results on this split" in md and "| MERT-95M, frozen, MLP probe | 0.7480 |" in md
    assert f"| this run (simple_cnn) | {results['test']['accuracy']:.4f} |" in md
    assert "| reggae |" in md and "![confusion_matrix](plots/confusion_matrix.png)" in md


def test_tag_report_intervals_need_predictions_and_tags_without_positives_are_listed(tmp_path):
    rng = np.random.default_rng(1)
    targets = (rng.random((120, 6)) < 0.3).astype(int)
    targets[:, 4] = 0
    probs = np.clip(0.5 * targets + 0.6 * rng.random((120, 6)), 0, 1)
    names = ["rock", "pop", "guitar", "piano", "opera", "drums"]
    results = {"test": tagging_metrics(probs, targets, names)}
    recipe = recipes.from_dict({"name": "tags", "data": {"name": "mtat"}})
    write_reports(tmp_path, recipe, results, HISTORY)
    md = (tmp_path / "report.md").read_text()
    assert "Intervals need track predictions" in md and "left out of the means: opera" in md
    assert "tested on 120 tracks; the published test split has 4332" in md  # not set beside published figures
    assert "MusiCNN (Pons et al. 2018)" not in md
    TrackPredictions([str(i) for i in range(120)], [""] * 120, probs, targets, names).save(
        tmp_path / "predictions" / "test.npz"
    )
    write_reports(tmp_path, recipe, results, HISTORY)
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| roc_auc_macro"))
    low, high = (float(v) for v in row.split("[")[1].split("]")[0].split(","))
    assert low < results["test"]["roc_auc_macro"] < high


def test_refresh_adds_saved_study_sections_in_order(tmp_path):
    recipe = recipes.from_dict({"name": "demo", "data": {"name": "synthetic"}})
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    (tmp_path / "metrics.json").write_text(json.dumps(genre_results(np.random.default_rng(2))))
    save_study(tmp_path, "mistakes", Section("Mistakes", text=["none"]), {})
    save_study(tmp_path, "durations", Section("Durations", tables=[[["s", "acc"], ["1", "0.5"]]]), {"rows": []})
    refresh(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Durations") < md.index("## Mistakes") and "| 1 | 0.5 |" in md
    assert "<h2>Durations</h2>" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_importing_the_plotting_modules_leaves_the_matplotlib_backend_alone(tmp_path):
    """A notebook's backend stays its own: importing the report, compare --vary, compare and the
    studies switches nothing, and their figures still save as PNGs."""
    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import finetune.report, finetune.vary, finetune.compare, finetune.studies; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        f"finetune.report.save_figure(finetune.report.per_tag_plot({{'a': {{'roc_auc': 0.8, 'ap': 0.6}}}}), "
        f"__import__('pathlib').Path({str(tmp_path / 'tags.png')!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "tags.png").read_bytes().startswith(b"\x89PNG")
