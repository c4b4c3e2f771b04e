"""Run reports: report.md (plots as PNG files) and a self-contained report.html (plots embedded).

A report is a list of `Section`s. The end of a run writes the cheap ones (setup, metrics with
bootstrap intervals, published results, per-class table, plots); each study run later by
`python -m finetune evaluate` saves its own section as RUN/studies/<name>.json and `refresh`
rewrites the report with it.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from finetune import recipe as recipes
from finetune.atomic import written_whole
from finetune.evaluation import TrackPredictions
from finetune.leakage import KEY as LEAKAGE_KEY, leakage_text
from finetune.metrics import LOSS, SINGLE_LABEL, headline, metrics_for, summary_names, task_of
from finetune.provenance import describe as provenance_lines
from finetune.published import PUBLISHED_SPLIT_ARTISTS, Published, partial_test_split, published_for, split_key
from finetune.rundir import read_identity
from finetune.stats.bootstrap import split_intervals


@dataclass
class Section:
    """A titled block: paragraphs, tables (first row the header) and images (paths relative to
    the run folder)."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def fmt(value) -> str:
    """A table cell: floats to 4 decimals, None as '-'."""
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def fmt_interval(interval: list[float] | None, digits: int = 4) -> str:
    """A 95 % interval cell, '-' when there is none."""
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "-"


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """`fig` as a PNG at `path`, written whole (processes ending together never leave half an image)."""
    with written_whole(path) as temporary:
        fig.savefig(temporary, format="png", dpi=dpi)
    return path


def subplots(*grid: int, figsize: tuple[float, float], **options) -> tuple[Figure, Any]:
    """(figure, axes) as pyplot's `subplots` makes them, without pyplot: no backend is chosen or
    switched (a notebook keeps its own), nothing stays open to close, PNGs are drawn by Agg."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **options)


def save_study(run_dir: Path, name: str, section: Section, data: dict, place: int | None = None) -> Path:
    """RUN/studies/<name>.json: the study's numbers, its report section and the section's place in
    the report (its study's position in `finetune.studies.STUDIES`)."""
    path = Path(run_dir) / "studies" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"section": dataclasses.asdict(section), "data": data, "place": place}, indent=2))
    return path


def study_sections(run_dir: Path) -> list[Section]:
    """Sections saved by studies, by their recorded place (none: last), then by name."""
    saved = {p.stem: json.loads(p.read_text()) for p in (Path(run_dir) / "studies").glob("*.json")}
    order = sorted(saved, key=lambda name: (saved[name].get("place") is None, saved[name].get("place") or 0, name))
    return [Section(**saved[name]["section"]) for name in order]


# --------------------------------------------------------------------------- plots


def learning_curves(log_history: list[dict]):
    """Training / validation loss and validation metrics against the step."""
    fig, (ax_loss, ax_metric) = subplots(1, 2, figsize=(10, 3.6))
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    for points, label in ((train, "train loss"), (val, "validation loss")):
        if points:
            ax_loss.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    if ax_loss.lines:
        ax_loss.legend()
    for key in (f"eval_{name}" for name in summary_names()):
        points = [(e["step"], e[key]) for e in log_history if key in e]
        if points:
            ax_metric.plot(*zip(*points), marker=".", label=key.removeprefix("eval_"))
    ax_metric.set(xlabel="step", title="Validation metrics", ylim=(0, 1.02))
    if ax_metric.lines:
        ax_metric.legend()
    fig.tight_layout()
    return fig


def confusion_matrix_plot(
    matrix: list[list[int]],
    label_names: list[str],
    predicted_names: list[str] | None = None,
    title: str = "Test confusion matrix",
):
    """Row-normalised confusion matrix with counts (columns may name more classes than rows)."""
    counts = np.asarray(matrix)  # (C, C') rows = truth
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    columns = predicted_names or label_names
    size = max(4.0, 0.55 * len(columns) + 2)
    fig, ax = subplots(figsize=(size, size * 0.85))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if rates[row, col] > 0.5 else "black",
            fontsize=8,
        )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def per_tag_plot(per_tag: dict):
    """ROC-AUC and AP per tag, sorted by ROC-AUC."""
    names = sorted(per_tag, key=lambda n: per_tag[n]["roc_auc"])
    fig, ax = subplots(figsize=(8, max(3.0, 0.18 * len(names) + 1)))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [per_tag[n]["roc_auc"] for n in names], height=0.4, label="ROC-AUC")
    ax.barh(y + 0.2, [per_tag[n]["ap"] for n in names], height=0.4, label="AP")
    ax.set_yticks(y, names, fontsize=7)
    ax.set(xlim=(0, 1), title="Test scores per tag")
    ax.legend()
    fig.tight_layout()
    return fig


def regularisation_path(log_history: list[dict], metric: str):
    """A probe's validation score against the L2 penalty, one line per layer."""
    fig, ax = subplots(figsize=(6, 3.6))
    for layer in sorted({e["layer"] for e in log_history}):
        points = sorted((e["weight_decay"], e[f"eval_{metric}"]) for e in log_history if e["layer"] == layer)
        ax.plot(*zip(*points), marker=".", label=f"layer {layer}")
    ax.set(
        xscale="log",
        xlabel="weight decay (L2 penalty)",
        ylabel=f"validation {metric}",
        title="Probe: validation score by penalty",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figures(results: dict, log_history: list[dict]) -> dict:
    """name -> matplotlib figure, for whatever this run has: learning curves for a trained run, the
    regularisation path for a probe."""
    probe_metric = results.get("validation", {}).get("probe_metric")
    figs = (
        {"probe_path": regularisation_path(log_history, probe_metric)}
        if probe_metric
        else {"learning_curves": learning_curves(log_history)}
    )
    test = results.get("test", {})
    if "confusion_matrix" in test:
        figs["confusion_matrix"] = confusion_matrix_plot(test["confusion_matrix"], list(test["per_class"]))
    if test.get("per_tag"):
        figs["per_tag"] = per_tag_plot(test["per_tag"])
    return figs


# --------------------------------------------------------------------------- tables


def metrics_table(results: dict, intervals: dict) -> list[list[str]]:
    """Rows: each registered metric a split has, one column per split, and the test split's 95 %
    bootstrap interval."""
    splits = list(results)
    keys = [m.name for m in metrics_for() if any(m.name in results[s] for s in splits)]
    rows = [["metric"] + splits + ["test 95% CI"]]
    for key in keys:
        rows.append([key] + [fmt(results[s].get(key)) for s in splits] + [fmt_interval(intervals.get(key))])
    return rows


def class_table(test: dict) -> list[list[str]]:
    if task_of(test) == SINGLE_LABEL:
        rows = [["class", "precision", "recall", "f1", "support"]]
        rows += [
            [n, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), str(v["support"])]
            for n, v in test.get("per_class", {}).items()
        ]
        return rows
    rows = [["tag", "ROC-AUC", "AP", "positives"]]
    rows += [[n, fmt(v["roc_auc"]), fmt(v["ap"]), str(v["positives"])] for n, v in test.get("per_tag", {}).items()]
    return rows


def published_table(recipe, rows: list[Published], test: dict) -> list[list[str]]:
    """This run next to the published scores `rows` of its split."""
    keys = list(dict.fromkeys(k for row in rows for k in row.scores))
    table = [["model"] + keys + ["source"]]
    table += [[row.model] + [fmt(row.scores.get(k)) for k in keys] + [row.source] for row in rows]
    table.append([f"this run ({recipe.model.name})"] + [fmt(test.get(k)) for k in keys] + ["metrics.json"])
    return table


def published_section(recipe, test: dict) -> Section | None:
    """Published scores on the run's split beside its own, when it tested the whole published test
    split; otherwise how much of that split it tested. None when nothing is published for the split."""
    rows = published_for(recipe)
    if not rows:
        return None
    partial = partial_test_split(recipe, test)
    if partial:
        return Section(
            "Published results",
            text=[f"This run was {partial}: published figures are not comparable and are not shown."],
        )
    artists = PUBLISHED_SPLIT_ARTISTS.get(split_key(recipe))
    text = (
        [f"Artists: the published split {artists}; this run: {leakage_text(test.get(LEAKAGE_KEY)) or 'not recorded'}"]
        if artists
        else []
    )
    return Section("Published results on this split", text=text, tables=[published_table(recipe, rows, test)])


def _setup_lines(recipe, run_dir: Path) -> list[str]:
    """The recipe's main settings, then the code and machine the run recorded (run.json)."""
    return [
        f"recipe: {recipe.name} - {recipe.description}",
        f"data: {recipe.data.name} ({recipe.data.root or 'generated'}), split "
        f"{recipe.data.split_scheme or 'standard'}, {recipe.data.clip_seconds} s windows",
        f"model: {recipe.model.name} (backbone {recipe.backbone.path or 'from scratch'}, mode {recipe.backbone.mode})",
        f"training: lr {recipe.train.lr}, batch {recipe.train.batch_size}, "
        f"epochs {recipe.train.epochs}, max_steps {recipe.train.max_steps}, seed {recipe.seed}",
        *provenance_lines(read_identity(run_dir) or {}),
    ]


def run_sections(run_dir: Path, recipe, results: dict, log_history: list[dict]) -> list[Section]:
    """The end-of-run sections (plots written to RUN/plots/)."""
    test = results.get("test", {})
    predictions_file = run_dir / "predictions" / "test.npz"
    predictions = TrackPredictions.load(predictions_file) if predictions_file.is_file() else None
    intervals = test.get("intervals") or (split_intervals(test, predictions) if test else {})
    metrics = Section("Metrics (track level)", tables=[metrics_table(results, intervals)])
    if test and not intervals:
        metrics.text.append("Intervals need track predictions: run `python -m finetune evaluate RUN`.")
    leak = leakage_text(test.get(LEAKAGE_KEY))
    if leak:
        metrics.text.append(leak)
    sections = [Section("Setup", text=_setup_lines(recipe, run_dir)), metrics]
    published = published_section(recipe, test)
    if published:
        sections.append(published)
    layer_scores = results.get("validation", {}).get("probe_layer_scores")
    if layer_scores:
        validation = results["validation"]
        sections.append(
            Section(
                "Probe layer sweep (validation)",
                text=[
                    f"Best layer: {validation['probe_layer']} (exported as the model), L2 penalty "
                    f"{validation.get('probe_weight_decay', 'n/a')}."
                ],
                tables=[
                    [["layer", f"validation {validation.get('probe_metric', 'score')}"]]
                    + [[layer, fmt(score)] for layer, score in layer_scores.items()]
                ],
            )
        )
    per_class = Section("Test per class", tables=[class_table(test)])
    if test.get("tags_without_positives"):
        per_class.text.append(
            "Tags with no positive (or no negative) test track, left out of the means: "
            + ", ".join(test["tags_without_positives"])
        )
    images = [
        str(save_figure(fig, run_dir / "plots" / f"{name}.png").relative_to(run_dir))
        for name, fig in figures(results, log_history).items()
    ]
    return sections + [per_class, Section("Plots", images=images)]


# --------------------------------------------------------------------------- rendering


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_markdown(title: str, sections: list[Section]) -> str:
    blocks = [f"# {title}"]
    for section in sections:
        blocks.append(f"## {section.title}")
        if section.text:
            blocks.append("\n".join(f"- {t}" for t in section.text))
        blocks += [_markdown_table(t) for t in section.tables]
        if section.images:
            blocks.append("\n".join(f"![{Path(p).stem}]({p})" for p in section.images))
    return "\n\n".join(blocks) + "\n"


def render_html(title: str, sections: list[Section], run_dir: Path) -> str:
    """One page with every image inlined as base64 PNG."""
    body = []
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            body.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in section.text) + "</ul>")
        body += [_html_table(t) for t in section.tables]
        for path in section.images:
            data = base64.b64encode((run_dir / path).read_bytes()).decode()
            name = Path(path).stem.replace("_", " ")
            body.append(
                f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{"".join(body)}
</body></html>
"""


def run_summary(run_dir: Path, recipe, results: dict) -> str:
    """What a finished run prints: the selection metric and the headline metric on validation and
    test (with 95 % bootstrap intervals where the run has them), the tracks scored, the report."""
    first = headline(task_of(results.get("test", {}))).name
    keys = list(dict.fromkeys([recipe.train.metric or LOSS, first]))
    lines = [f"{recipe.name}: {run_dir}"]
    for split in ("validation", "test"):
        metrics = results.get(split)
        if not metrics:
            continue
        intervals = metrics.get("intervals", {})
        parts = [
            f"{key} {fmt(metrics[key])}"
            + (" (95% CI {:.3f}-{:.3f})".format(*intervals[key]) if key in intervals else "")
            for key in keys
            if key in metrics
        ]
        lines.append(f"  {split:<10}  {', '.join(parts)}; {metrics.get('num_tracks', '?')} tracks")
    leak = leakage_text(results.get("test", {}).get(LEAKAGE_KEY))
    if leak:
        lines.append(f"  {leak}")
    lines.append(f"  report: {Path(run_dir) / 'report.html'}")
    return "\n".join(lines)


def console_text(sections: list[Section]) -> str:
    """Sections as plain text for the terminal: titles, lines, tables (images left out)."""
    blocks = []
    for section in sections:
        blocks.append(section.title)
        blocks += [f"  {line}" for line in section.text]
        blocks += [_markdown_table(table) for table in section.tables]
    return "\n".join(blocks)


def write_reports(run_dir: Path, recipe, results: dict, log_history: list[dict]) -> None:
    """Write report.md (+ plots/*.png) and a self-contained report.html into `run_dir`."""
    run_dir = Path(run_dir)
    sections = run_sections(run_dir, recipe, results, log_history) + study_sections(run_dir)
    skipped = [f for split in results.values() for f in split.get("skipped_files", [])]
    if skipped:
        sections.append(Section("Skipped files", text=skipped))
    title = f"finetune report: {recipe.name}"
    (run_dir / "report.md").write_text(render_markdown(title, sections))
    (run_dir / "report.html").write_text(render_html(title, sections, run_dir))


def refresh(run_dir: Path) -> None:
    """Rewrite a run folder's reports from its files (after a study added a section)."""
    run_dir = Path(run_dir)
    recipe = recipes.load(str(run_dir / "recipe.yaml"))
    results = json.loads((run_dir / "metrics.json").read_text())
    history_file = run_dir / "log_history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    write_reports(run_dir, recipe, results, history)
