"""Run reports: report.md (plots as PNG files) and a self-contained report.html (plots embedded)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HEADLINE_KEYS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "top3_accuracy",
                 "roc_auc_macro", "pr_auc_macro", "roc_auc_micro", "pr_auc_micro", "num_tracks")


def learning_curves(log_history: list[dict]):
    """Training / validation loss and validation metrics against the step."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.6))
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    for points, label in ((train, "train loss"), (val, "validation loss")):
        if points:
            ax_loss.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.legend()
    for key in ("eval_accuracy", "eval_macro_f1", "eval_roc_auc_macro", "eval_pr_auc_macro"):
        points = [(e["step"], e[key]) for e in log_history if key in e]
        if points:
            ax_metric.plot(*zip(*points), marker=".", label=key.removeprefix("eval_"))
    ax_metric.set(xlabel="step", title="Validation metrics", ylim=(0, 1.02))
    if ax_metric.lines:
        ax_metric.legend()
    fig.tight_layout()
    return fig


def confusion_matrix_plot(matrix: list[list[int]], label_names: list[str]):
    """Row-normalised confusion matrix with counts."""
    counts = np.asarray(matrix)  # (C, C) rows = truth
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set(xlabel="predicted", ylabel="true", title="Test confusion matrix")
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if rates[row, col] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def per_tag_plot(per_tag: dict):
    """ROC-AUC and AP per tag, sorted by ROC-AUC."""
    names = sorted(per_tag, key=lambda n: per_tag[n]["roc_auc"])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.18 * len(names) + 1)))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [per_tag[n]["roc_auc"] for n in names], height=0.4, label="ROC-AUC")
    ax.barh(y + 0.2, [per_tag[n]["ap"] for n in names], height=0.4, label="AP")
    ax.set_yticks(y, names, fontsize=7)
    ax.set(xlim=(0, 1), title="Test scores per tag")
    ax.legend()
    fig.tight_layout()
    return fig


def figures(results: dict, log_history: list[dict]) -> dict:
    """name -> matplotlib figure, for whatever this run has."""
    figs = {"learning_curves": learning_curves(log_history)}
    test = results.get("test", {})
    if "confusion_matrix" in test:
        figs["confusion_matrix"] = confusion_matrix_plot(test["confusion_matrix"], list(test["per_class"]))
    if test.get("per_tag"):
        figs["per_tag"] = per_tag_plot(test["per_tag"])
    return figs


def metrics_table(results: dict) -> list[list[str]]:
    """Rows: metric, then one column per split."""
    splits = list(results)
    keys = [k for k in HEADLINE_KEYS if any(k in results[s] for s in splits)]
    rows = [["metric"] + splits]
    for key in keys:
        rows.append([key] + [_fmt(results[s].get(key)) for s in splits])
    return rows


def class_table(test: dict) -> list[list[str]]:
    if "per_class" in test:
        rows = [["class", "precision", "recall", "f1", "support"]]
        rows += [[n, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), str(v["support"])]
                 for n, v in test["per_class"].items()]
        return rows
    rows = [["tag", "ROC-AUC", "AP", "positives"]]
    rows += [[n, _fmt(v["roc_auc"]), _fmt(v["ap"]), str(v["positives"])]
             for n, v in test.get("per_tag", {}).items()]
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _setup_lines(recipe) -> list[str]:
    return [
        f"recipe: {recipe.name} - {recipe.description}",
        f"data: {recipe.data.name} ({recipe.data.root or 'generated'}), split "
        f"{recipe.data.split_scheme or 'standard'}, {recipe.data.clip_seconds} s windows",
        f"model: {recipe.model.name} (backbone {recipe.backbone.path or 'from scratch'}, mode {recipe.backbone.mode})",
        f"training: lr {recipe.train.lr}, batch {recipe.train.batch_size}, "
        f"epochs {recipe.train.epochs}, max_steps {recipe.train.max_steps}, seed {recipe.seed}",
    ]


def write_reports(run_dir: Path, recipe, results: dict, log_history: list[dict]) -> None:
    """Write report.md (+ plots/*.png) and a self-contained report.html into `run_dir`."""
    plots = {name: _png(fig) for name, fig in figures(results, log_history).items()}
    (run_dir / "plots").mkdir(exist_ok=True)
    for name, data in plots.items():
        (run_dir / "plots" / f"{name}.png").write_bytes(data)
    title = f"finetune report: {recipe.name}"
    setup, metrics, classes = _setup_lines(recipe), metrics_table(results), class_table(results.get("test", {}))
    skipped = [f for split in results.values() for f in split.get("skipped_files", [])]

    md = [f"# {title}", "", "## Setup", ""] + [f"- {line}" for line in setup]
    md += ["", "## Metrics (track level)", "", _markdown_table(metrics), "", "## Test per class", "",
           _markdown_table(classes), "", "## Plots", ""]
    md += [f"![{name}](plots/{name}.png)" for name in plots]
    if skipped:
        md += ["", "## Skipped files", ""] + [f"- {s}" for s in skipped]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")

    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>" for name, data in plots.items()
    )
    skipped_html = ("<h2>Skipped files</h2><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
                    + "</ul>") if skipped else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Setup</h2><ul>{''.join(f'<li>{html.escape(s)}</li>' for s in setup)}</ul>
<h2>Metrics (track level)</h2>{_html_table(metrics)}
<h2>Test per class</h2>{_html_table(classes)}
<h2>Plots</h2>{images}{skipped_html}
</body></html>
"""
    (run_dir / "report.html").write_text(page)
