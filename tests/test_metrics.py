"""The metric registry (`finetune.metrics`): it names exactly what evaluation reports, its scorers
agree with evaluation, metrics.json records each split's task, and a metric added in a module of
its own reaches the report, its interval, the console line and the model card."""

import importlib.util
import json
import warnings

import numpy as np
import pytest

from finetune import export, metrics, recipe as recipes
from finetune.cli import main
from finetune.console import metric_text
from finetune.evaluation import evaluate_windows, scalar_metrics, track_metrics
from finetune.report import run_summary, write_reports

TASKS = (metrics.SINGLE_LABEL, metrics.MULTI_LABEL)
GENRES = ["blues", "classical", "country", "disco", "jazz", "rock"]


def example(task: str, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Track probabilities (N, count) and labels of `task`: (N,) classes or (N, count) multi-hot."""
    if task == metrics.MULTI_LABEL:
        targets = (rng.random((80, count)) < 0.4).astype(int)
        targets[:2] = [[1] * count, [0] * count]  # every tag has a positive and a negative
        return np.clip(0.4 * targets + 0.7 * rng.random((80, count)), 0, 1), targets
    labels = rng.integers(0, count, 80)
    probs = rng.random((80, count)) + np.eye(count)[labels] * rng.random((80, 1))
    return probs / probs.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("count", [2, 4, 6, 11])
def test_the_registry_names_exactly_what_evaluation_reports(task, count):
    probs, labels = example(task, count, np.random.default_rng(count))
    reported = scalar_metrics(track_metrics(probs, labels, [str(i) for i in range(count)]))
    registered = {m.name for m in metrics.metrics_for(task, count)}
    assert {metrics.LOSS, *reported} == registered, "every reported metric registered, and only those (+ the loss)"
    assert track_metrics(probs, labels, [str(i) for i in range(count)])["task"] == task
    for metric in metrics.metrics_for(task, count):
        if metric.score:  # evaluation reports the registry's scores (tests/test_evaluation.py: scikit-learn's)
            assert metric.score(probs, labels) == pytest.approx(reported[metric.name], abs=1e-12), metric.name


def test_each_task_has_one_headline_and_every_name_is_registered_once():
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names))
    for task in TASKS:
        assert [m.name for m in metrics.metrics_for(task) if m.headline] == [metrics.headline(task).name]
    assert metrics.headline(metrics.SINGLE_LABEL).name == "accuracy"
    assert metrics.headline(metrics.MULTI_LABEL).name == "roc_auc_macro"
    assert metrics.named(metrics.LOSS).higher_is_better is False
    with pytest.raises(KeyError, match="registered: loss, accuracy"):
        metrics.named("bogus")


def test_metrics_json_records_each_splits_task(demo_run):
    results = json.loads((demo_run / "metrics.json").read_text())
    assert {split: m["task"] for split, m in results.items()} == {"validation": "single_label", "test": "single_label"}
    # the Trainer and the probe score through evaluate_windows: a tagger's splits say so too
    logits = np.random.default_rng(0).normal(size=(6, 3))
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    scored, _, _ = evaluate_windows(logits, targets, np.arange(6), list("abc"), multi_label=True)
    assert scored["task"] == metrics.MULTI_LABEL


def test_run_folders_written_before_the_record_are_read_as_before():
    assert metrics.task_of({"task": "multi_label"}) == metrics.MULTI_LABEL
    assert metrics.task_of({"per_tag": {}, "roc_auc_macro": 0.9}) == metrics.MULTI_LABEL  # old tagger
    assert metrics.task_of({"per_class": {}, "accuracy": 0.8}) == metrics.SINGLE_LABEL  # old genre run
    recipe = recipes.from_dict({"name": "tags", "data": {"name": "mtat"}})
    old = {"test": {"loss": 0.3, "roc_auc_macro": 0.9, "per_tag": {}, "num_tracks": 5}}
    assert "loss 0.3000, roc_auc_macro 0.9000" in run_summary("RUN", recipe, old)


THROWAWAY = """
import numpy as np

from finetune.metrics import SINGLE_LABEL, Metric, register

ERROR_RATE = register(Metric("error_rate", "Error rate", SINGLE_LABEL, higher_is_better=False, summary=True,
                             score=lambda probs, labels: float(np.mean(probs.argmax(axis=1) != labels))))
"""


@pytest.fixture
def error_rate(tmp_path, monkeypatch) -> metrics.Metric:
    """A throwaway metric registered by a module of its own, for one test (the registry is restored)."""
    monkeypatch.setattr(metrics, "METRICS", metrics.METRICS)
    module_file = tmp_path / "throwaway_metric.py"
    module_file.write_text(THROWAWAY)
    spec = importlib.util.spec_from_file_location("throwaway_metric", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ERROR_RATE


def test_register_refuses_a_taken_name_and_a_metric_nothing_could_compute(error_rate):
    assert metrics.named("error_rate") is error_rate
    with pytest.raises(ValueError, match="'error_rate' is registered already"):
        metrics.register(error_rate)
    with pytest.raises(ValueError, match="'hit_rate' has no score"):
        metrics.register(metrics.Metric("hit_rate", "Hit rate", metrics.SINGLE_LABEL))
    with pytest.raises(ValueError, match="task 'genres' is none of"):
        metrics.register(metrics.Metric("hit_rate", "Hit rate", "genres", score=metrics.accuracy))


def test_a_metric_in_a_module_of_its_own_reaches_report_interval_console_and_card(error_rate, tmp_path):
    probs, labels = example(metrics.SINGLE_LABEL, len(GENRES), np.random.default_rng(7))
    test = track_metrics(probs, labels, GENRES)  # evaluation computes it through the registry
    assert test["error_rate"] == pytest.approx(1 - test["accuracy"])
    run_dir = tmp_path / "run"
    recipe = recipes.from_dict({"name": "cnn_gtzan", "data": {"name": "gtzan"}})
    write_reports(run_dir, recipe, {"test": test}, [])
    row = next(line for line in (run_dir / "report.md").read_text().splitlines() if line.startswith("| error_rate |"))
    low, high = (float(v) for v in row.split("[")[1].split("]")[0].split(","))
    assert f"| {test['error_rate']:.4f} |" in row and low < test["error_rate"] < high  # with its bootstrap interval
    assert "error_rate 0.25" in metric_text({"eval_error_rate": 0.25})

    config = {
        "model_type": "finetune_simple_cnn",
        "id2label": {str(i): g for i, g in enumerate(GENRES)},
        "problem_type": "single_label_classification",
    }
    card = export.model_card(recipes.load("cnn_gtzan", ["data.root=/data"]), test, config)
    assert f"| Error rate | {test['error_rate']:.4f} |" in card
    assert "- error_rate" in card.split("---\n")[1]  # the card's metadata lists it
    tags, targets = example(metrics.MULTI_LABEL, 4, np.random.default_rng(8))
    assert "error_rate" not in track_metrics(tags, targets, list("abcd")), "a genre metric only"


def test_tag_scores_with_no_scorable_tag_are_nan_without_a_warning():
    """A small bootstrap resample can hold no tag with both positives and negatives."""
    probs, targets = np.array([[0.2, 0.9], [0.7, 0.1]]), np.array([[1, 0], [1, 0]])  # tag 0 all, tag 1 none
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(metrics.roc_auc_macro(probs, targets)) and np.isnan(metrics.pr_auc_macro(probs, targets))


@pytest.mark.slow
def test_a_registered_metric_reaches_a_runs_metrics_and_evaluate_on(error_rate, synthetic_root, tmp_path):
    """Trained with the metric registered, a run's metrics.json has it; scored on another dataset
    (`evaluate --on`, here the generated one through a mapping of every class to itself), so do
    the cross-dataset metrics, by the same definition."""
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=2",
                "train.batch_size=4",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["error_rate"] == pytest.approx(1 - test["accuracy"])
    mapping = tmp_path / "identity.yaml"
    mapping.write_text("".join(f"{name}: {name}\n" for name in test["per_class"]))
    assert (
        main(["evaluate", str(run_dir), "--on", "synthetic", f"data.root={synthetic_root}", "--mapping", str(mapping)])
        == 0
    )
    cross = json.loads((run_dir / "studies" / "cross_synthetic_test.json").read_text())["data"]["metrics"]
    assert cross["error_rate"] == pytest.approx(1 - cross["accuracy"])
    assert cross["num_tracks"] == test["num_tracks"] and cross["accuracy"] == pytest.approx(test["accuracy"])
