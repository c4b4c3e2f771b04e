"""`python -m finetune compare RUN RUN ...`: one table and one plot of several runs' test scores, and
a paired test of each run against the first on the same test tracks (`finetune.stats.paired`).

Runs are compared only on the same test set: same dataset, split scheme and options (and seed when
the split is random), same classes and the same number of test tracks. Anything else is refused,
naming what differs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from finetune import recipe as recipes
from finetune.evaluation import TrackPredictions
from finetune.metrics import compared_names, task_of
from finetune.published import split_key
from finetune.report import Section, fmt, fmt_interval, render_markdown, save_figure, subplots
from finetune.stats.bootstrap import split_intervals
from finetune.stats.paired import paired_test


class ComparisonError(ValueError):
    """The runs were not tested on the same split."""


def load_run(run_dir: Path) -> dict:
    """What a comparison needs from a run folder."""
    for name in ("recipe.yaml", "metrics.json", "model/config.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run folder (no {name})")
    recipe = recipes.load(str(run_dir / "recipe.yaml"))
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    id2label = json.loads((run_dir / "model" / "config.json").read_text())["id2label"]
    split = split_key(recipe)
    signature = {
        "dataset and split": split,
        "classes": [id2label[str(i)] for i in range(len(id2label))],
        "test tracks": test["num_tracks"],
    }
    if split.split("/")[1] == "random":
        signature["split seed"] = recipe.seed
    predictions_file = run_dir / "predictions" / "test.npz"
    predictions = TrackPredictions.load(predictions_file) if predictions_file.is_file() else None
    return {
        "name": f"{run_dir.parent.name}/{run_dir.name}",
        "recipe": recipe,
        "test": test,
        "signature": signature,
        "intervals": split_intervals(test, predictions),
        "predictions": predictions,
    }


def check_comparable(runs: list[dict]) -> None:
    """Raise ComparisonError naming each property that differs between the runs."""
    differences = []
    for key in {k for r in runs for k in r["signature"]}:
        values = [r["signature"].get(key) for r in runs]
        if any(v != values[0] for v in values):
            shown = ", ".join(f"{r['name']}: {str(v)[:80]}" for r, v in zip(runs, values))
            differences.append(f"{key} differs ({shown})")
    if differences:
        raise ComparisonError("cannot compare runs tested on different data: " + "; ".join(sorted(differences)))


def comparison_figure(runs: list[dict], keys: list[str]):
    """Grouped bars: one group per metric, one bar per run, 95 % bootstrap intervals as error bars."""
    fig, ax = subplots(figsize=(max(6.0, 1.5 * len(keys) + 0.5 * len(runs)), 4))
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        x = np.arange(len(keys)) + (i - (len(runs) - 1) / 2) * width
        values = np.array([run["test"].get(k, np.nan) for k in keys])
        intervals = [run["intervals"].get(k, [v, v]) for k, v in zip(keys, values)]
        errors = np.abs(np.array(intervals).T - values)  # (2, K)
        ax.bar(x, values, width, yerr=errors, capsize=3, label=run["name"])
    ax.set_xticks(np.arange(len(keys)), keys)
    ax.set(ylim=(0, 1.05), ylabel="test score", title="Test scores (95% bootstrap intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def paired_section(runs: list[dict]) -> tuple[Section, list[dict | None]]:
    """Each later run against the first on the same tracks (`finetune.stats.paired`), and the results
    by run (None for the first, and for all when a run has no predictions/test.npz)."""
    first = runs[0]
    title = f"Paired tests against {first['name']}"
    missing = [r["name"] for r in runs if r["predictions"] is None]
    if missing:
        note = (
            f"the paired test needs every run's predictions/test.npz (`python -m finetune evaluate RUN` "
            f"writes it); missing in: {', '.join(missing)}"
        )
        return Section(title, text=[note]), [None] * len(runs)
    results = [None] + [paired_test(r["predictions"], first["predictions"]) for r in runs[1:]]
    genres = not first["predictions"].multi_label
    header = ["run", "metric", "difference", "95% interval", "bootstrap p"]
    table = [header + (["McNemar p", "b / c"] if genres else [])]
    for run, result in zip(runs[1:], results[1:]):
        row = [
            run["name"],
            result["metric"],
            f"{result['difference']:+.4f}",
            fmt_interval(result["interval"]),
            f"{result['bootstrap_p']:.3g}",
        ]
        table.append(row + ([f"{result['mcnemar_p']:.3g}", f"{result['b']} / {result['c']}"] if genres else []))
    text = [
        f"difference = run - {first['name']} on the same {results[1]['tracks']} test tracks; interval and p "
        f"from {results[1]['resamples']} paired bootstrap resamples of the tracks"
    ]
    if genres:
        text.append(
            "McNemar: exact two-sided binomial test on b (tracks only the run gets right) and "
            "c (tracks only the first run gets right)"
        )
    return Section(title, text=text, tables=[table]), results


def compare(run_dirs: list[str | Path], out: str | Path | None = None) -> tuple[Path, str]:
    """Write compare.md, compare.png and compare.json into `out`; return (folder, markdown)."""
    if len(run_dirs) < 2:
        raise ComparisonError("give at least two run folders to compare")
    runs = [load_run(Path(d)) for d in run_dirs]
    check_comparable(runs)
    keys = compared_names(task_of(runs[0]["test"]))
    out = Path(out) if out else Path(run_dirs[0]).parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    table = [["run", "model", "backbone", "mode"] + list(keys)]
    for run in runs:
        recipe = run["recipe"]
        cells = [f"{fmt(run['test'].get(k))} {fmt_interval(run['intervals'].get(k), 3)}" for k in keys]
        table.append(
            [run["name"], recipe.model.name, recipe.backbone.path or "from scratch", recipe.backbone.mode] + cells
        )
    save_figure(comparison_figure(runs, keys), out / "compare.png")
    section = Section(
        f"Test split: {runs[0]['signature']['dataset and split']}", tables=[table], images=["compare.png"]
    )
    paired, paired_results = paired_section(runs)
    markdown = render_markdown("finetune comparison", [section, paired])
    (out / "compare.md").write_text(markdown)
    (out / "compare.json").write_text(
        json.dumps(
            [
                {
                    "run": str(d),
                    "test": {k: r["test"].get(k) for k in keys},
                    "intervals": r["intervals"],
                    "paired_test_against_first": result,
                }
                for d, r, result in zip(run_dirs, runs, paired_results)
            ],
            indent=2,
        )
    )
    return out, markdown
