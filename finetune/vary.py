"""`python -m finetune compare --recipe R --vary KEY=V1,V2,...`: which value of one setting is best.

The recipe runs once per value of one dotted key, each value over the same folds and seeds: a
cross-validation per value (`finetune.cv`: OUT/<KEY>=<VALUE>/ holds its run folders fold{i}-seed{s},
summary.md and pooled predictions). Every value's recipes are loaded and checked before anything
trains. Run again with the same command, it continues where it stopped (`finetune.cv.run_or_reuse`);
all values' runs go through one worker loop, shared with other workers (`--jobs`, `finetune.workers`).
OUT/vary.md, vary.json and vary.png hold one row per value: mean ± std over the runs, the pooled score
with its interval, the paired test against the first value, the model's size and speed. Like `cv`, it
sits on top: nothing imports it but the command line.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune import recipe as recipes
from finetune.atomic import write_atomically
from finetune.console import each_line_once
from finetune.cv import STD_NOTE, Job, plan, planned_runs, pooled_leakage, run_folders, write_summary
from finetune.evaluation import TrackPredictions
from finetune.folders import VARY_FILE, check_output_folder
from finetune.leakage import KEY as LEAKAGE_KEY, leak_cell
from finetune.models import load_model
from finetune.report import Section, fmt, fmt_interval, render_markdown, save_figure, subplots
from finetune.representations import disagreement_section, representation_section
from finetune.rundir import flatten
from finetune.stats.bootstrap import RESAMPLES, bootstrap_draws, headline_score, percentile_interval
from finetune.stats.paired import paired_test
from finetune.workers import work_through, workers

logger = logging.getLogger("finetune")

FRONT_END_KEY = "model.args.frontend"  # varying it adds how each front end sees the music
NOTES = {
    "pooled": "pooled: each seed's test predictions pooled over the folds (every track once per seed), all "
    "seeds scored together (for accuracy on the same tracks: the mean over the seeds); 95% bootstrap "
    "interval over tracks (a resample draws tracks and takes every seed's predictions of them)",
    "paired": "Δ vs first: this value - the first value on the same pooled test tracks, paired per seed "
    "(finetune.stats.paired: paired bootstrap interval and p, McNemar for genres); with several "
    "seeds each cell lists the seeds in order, separated by /",
    "size": "parameters: the first run's saved model (model/, LoRA merged; buffers such as front-end filters "
    "and batch-norm statistics left out); train s: the Trainer's train_runtime (a probe: from run.json's "
    "start to metrics.json); val windows/s: the Trainer's last validation throughput; both the mean over "
    "the runs, - where not recorded",
}


@dataclass(frozen=True)
class Value:
    """One value of the varied key: as given, its folder under OUT and its cross-validation's jobs."""

    text: str
    folder: str
    jobs: list[Job]


def parse_vary(text: str) -> tuple[str, list[str]]:
    """`train.lr=1e-4,3e-4` -> ("train.lr", ["1e-4", "3e-4"]); at least two distinct values."""
    key, sep, listed = text.partition("=")
    key = key.strip()
    values = [v.strip() for v in listed.split(",") if v.strip()]
    if not sep or not key:
        raise recipes.RecipeError(f"--vary {text!r}: give KEY=V1,V2,..., e.g. train.lr=1e-4,3e-4,1e-3")
    if len(values) < 2:
        raise recipes.RecipeError(f"--vary {key}: give at least 2 values to compare, not {len(values)}")
    if len(set(values)) < len(values):
        raise recipes.RecipeError(f"--vary {key}: {listed} repeats a value")
    return key, values


def safe_name(text: str) -> str:
    """`text` as a folder name: characters other than letters, digits and ._=+- as _."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def folder_name(key: str, value: str) -> str:
    return safe_name(f"{key}={value}")


def check_distinct(key: str, values: list[Value]) -> None:
    """Refuse two values that set the same thing (1e-3 and 0.001), or that share a folder name."""
    settings = [repr(flatten(v.jobs[0].recipe.to_dict()).get(key)) for v in values]
    for what, seen in (("set the same value", settings), ("share the folder name", [v.folder for v in values])):
        for i, j in itertools.combinations(range(len(values)), 2):
            if seen[i] == seen[j]:
                raise recipes.RecipeError(f"--vary {key}: {values[i].text} and {values[j].text} {what} ({seen[i]})")


def plan_values(
    recipe: str, overrides: list[str], key: str, values: list[str], folds: int | None, seeds: list[int], out: Path
) -> list[Value]:
    """Every value's runs (`finetune.cv.plan`: each recipe loaded and checked), before anything trains."""
    planned = []
    for text in values:
        try:
            jobs = plan(recipe, [*overrides, f"{key}={text}"], folds, seeds, out / folder_name(key, text))
        except ValueError as err:
            raise recipes.RecipeError(f"--vary {key}={text}: {err}") from None
        planned.append(Value(text, folder_name(key, text), jobs))
    check_distinct(key, planned)
    return planned


def parameter_count(run_dir: Path) -> int:
    """The parameters of the run's saved model (loaded from model/: its files also hold buffers, such as
    a front end's filters, that are not parameters)."""
    return sum(p.numel() for p in load_model(run_dir / "model").model.parameters())


def logged(run_dir: Path, key: str) -> float | None:
    """The last value of `key` in the run's log_history.json, None when it never logged it."""
    history = json.loads((run_dir / "log_history.json").read_text())
    return next((entry[key] for entry in reversed(history) if key in entry), None)


def training_seconds(run_dir: Path) -> float | None:
    """The Trainer's train_runtime; a run without one (a probe, never resumed): seconds from its
    start (run.json) to its metrics.json."""
    seconds = logged(run_dir, "train_runtime")
    identity = json.loads((run_dir / "run.json").read_text())
    if seconds is None and not identity.get("resumes"):
        from_start = (run_dir / "metrics.json").stat().st_mtime - (run_dir / "run.json").stat().st_mtime
        seconds = max(from_start, 0.0)
    return seconds


def mean_of(values: list[float | None]) -> float | None:
    """The mean of the values that are not None (None when none is)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def seeds_pooled(pooled: list[TrackPredictions], seed: int = 0) -> tuple[float, list[float]]:
    """The headline metric of every seed's pooled test predictions scored together (for accuracy on the
    same tracks: the mean over the seeds), with its 95 % bootstrap interval over tracks: a resample
    draws track ids and takes every seed's predictions of each (one seed: `headline_interval`'s)."""
    probs = np.concatenate([p.probs for p in pooled])  # (S*N, C)
    labels = np.concatenate([p.labels for p in pooled])  # (S*N,) or (S*N, C)
    ids = [track for p in pooled for track in p.ids]
    index = {track: i for i, track in enumerate(dict.fromkeys(ids))}
    owner = np.array([index[track] for track in ids])  # (S*N,) each row's track
    rows_of = np.split(np.argsort(owner, kind="stable"), np.cumsum(np.bincount(owner))[:-1])  # U arrays of rows

    def score(tracks: np.ndarray) -> dict:
        rows = np.concatenate([rows_of[t] for t in tracks])
        return {"score": headline_score(probs[rows], labels[rows])}

    draws = bootstrap_draws(score, (np.arange(len(index)),), RESAMPLES[pooled[0].task], seed)["score"]  # (R,)
    return score(np.arange(len(index)))["score"], percentile_interval(draws)


def paired_against(pooled: list[TrackPredictions], first: list[TrackPredictions]) -> list[dict]:
    """Each seed's paired test of this value's pooled predictions against the first value's; a seed
    whose tracks differ (the key changes the test set) gets {"error": why}."""
    results = []
    for ours, theirs in zip(pooled, first):
        try:
            results.append(paired_test(ours, theirs))
        except ValueError as err:
            results.append({"error": str(err)})
    return results


def value_result(value: Value, summary: dict, pooled: list[TrackPredictions], run_dirs: list[Path]) -> dict:
    """vary.json's entry of one value (without its paired test): its runs, spread, pooled score (from
    each seed's `pooled` predictions), size, speed."""
    metric = summary["pooled"][0]["metric"]
    spread = summary["mean_std"]["test"][metric]
    score, interval = seeds_pooled(pooled)
    return {
        "value": value.text,
        "folder": value.folder,
        "metric": metric,
        "runs": [
            {"fold": r["fold"], "seed": r["seed"], "run": f"{value.folder}/{r['run']}", "score": r["test"][metric]}
            for r in summary["runs"]
        ],
        "mean": spread["mean"],
        "std": spread["std"],
        "pooled": {"value": score, "interval": interval, "tracks": len(pooled[0].ids)},
        LEAKAGE_KEY: pooled_leakage(summary["runs"]),
        "parameters": parameter_count(run_dirs[0]),
        "train_seconds": mean_of([training_seconds(d) for d in run_dirs]),
        "eval_windows_per_second": mean_of([logged(d, "eval_samples_per_second") for d in run_dirs]),
    }


def paired_cells(results: list[dict] | None, genres: bool) -> list[str]:
    """The Δ vs first cells of a row, each seed's value joined by ' / ' ('first' on the first row)."""
    count = 4 if genres else 3
    if results is None:
        return ["first"] + ["-"] * (count - 1)
    if any("error" in r for r in results):
        return ["not paired: " + next(r["error"] for r in results if "error" in r)] + ["-"] * (count - 1)
    cells = [
        [f"{r['difference']:+.4f}" for r in results],
        [fmt_interval(r["interval"]) for r in results],
        [f"{r['bootstrap_p']:.3g}" for r in results],
    ]
    if genres:
        cells.append([f"{r['mcnemar_p']:.3g} ({r['b']} / {r['c']})" for r in results])
    return [" / ".join(c) for c in cells]


def rounded(value: float | None) -> str:
    """A seconds or speed cell: one decimal, '-' for None."""
    return "-" if value is None else f"{value:.1f}"


def vary_table(key: str, results: list[dict], genres: bool) -> list[list[str]]:
    """One row per value: spread, pooled score, paired test against the first, size and speed."""
    metric = results[0]["metric"]
    header = (
        [key, f"{metric} mean ± std", f"pooled {metric}", "95% interval", "Δ vs first", "95% interval", "bootstrap p"]
        + (["McNemar p (b / c)"] if genres else [])
        + ["test tracks sharing an artist", "parameters", "train s", "val windows/s", "runs"]
    )
    rows = [header]
    for r in results:
        rows.append(
            [
                r["value"],
                f"{fmt(r['mean'])} ± {fmt(r['std'])}",
                fmt(r["pooled"]["value"]),
                fmt_interval(r["pooled"]["interval"]),
                *paired_cells(r["paired_against_first"], genres),
                leak_cell(r.get(LEAKAGE_KEY)),
                f"{r['parameters']:,}",
                rounded(r["train_seconds"]),
                rounded(r["eval_windows_per_second"]),
                f"[{len(r['runs'])} run{'s' if len(r['runs']) > 1 else ''}]({r['folder']}/summary.md)",
            ]
        )
    return rows


def vary_figure(key: str, results: list[dict]):
    """Each value's per-run test scores (points) and its pooled score with its 95 % interval."""
    fig, ax = subplots(figsize=(max(5.0, 1.3 * len(results) + 2), 4))
    rng = np.random.default_rng(0)
    for x, r in enumerate(results):
        scores = np.array([run["score"] for run in r["runs"]], dtype=np.float64)  # (R,)
        ax.scatter(
            x - 0.15 + rng.uniform(-0.06, 0.06, len(scores)),
            scores,
            s=18,
            alpha=0.7,
            color="tab:blue",
            label="runs (fold x seed)" if x == 0 else None,
        )
        low, high = r["pooled"]["interval"]
        ax.errorbar(
            x + 0.15,
            r["pooled"]["value"],
            yerr=[[r["pooled"]["value"] - low], [high - r["pooled"]["value"]]],
            fmt="o",
            color="black",
            capsize=4,
            label="pooled (95% interval)" if x == 0 else None,
        )
    ax.set_xticks(range(len(results)), [r["value"] for r in results])
    ax.set(xlabel=key, ylabel=f"test {results[0]['metric']}", title=f"Test scores by {key}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def extra_sections(
    key: str, run_dirs: dict[str, list[Path]], pooled: dict[str, list[TrackPredictions]], out: Path
) -> list[Section]:
    """How each front end sees the music (when the key is the front end: the first run of each value),
    and where the values' pooled predictions of the first seed disagree."""
    sections = []
    if key == FRONT_END_KEY:
        sections.append(representation_section({value: dirs[0] for value, dirs in run_dirs.items()}, out))
    return sections + [disagreement_section({value: seeds[0] for value, seeds in pooled.items()})]


def vary_markdown(summary: dict, sections: list[Section]) -> str:
    """vary.md: the table with its notes and plot, then the extra sections."""
    results, genres = summary["values"], summary["task"] == "single_label"
    folds = f"{summary['folds']} folds" if summary["folds"] else "the dataset's own split"
    runs = len(results[0]["runs"])
    text = [
        f"{results[0]['metric']} over each value's runs ({runs}: {folds} x seeds "
        f"{', '.join(map(str, summary['seeds']))}): mean ± {STD_NOTE}",
        NOTES["pooled"],
        NOTES["paired"],
        NOTES["size"],
    ]
    table = Section(
        f"{summary['key']} on {summary['recipe']}",
        text=text,
        tables=[vary_table(summary["key"], results, genres)],
        images=["vary.png"],
    )
    return render_markdown(f"finetune compare: which {summary['key']} is best", [table, *sections])


def vary(
    recipe: str,
    overrides: list[str],
    spec: str,
    folds: int | None,
    seeds: list[int],
    out: str | Path | None = None,
    jobs: int = 1,
    command: Sequence[str] = (),
) -> tuple[Path, str]:
    """Run the recipe for every value of `spec` (KEY=V1,V2,...) over the same folds and seeds, or reuse
    the runs already in `out` (default runs/<recipe>-vary-<KEY>), all values' runs in one worker loop
    (`workers.work_through`; `jobs` > 1: `jobs` - 1 more workers run `command`, the arguments after
    `python -m finetune` without --out); write vary.md, vary.json and vary.png; return (out, markdown)."""
    key, texts = parse_vary(spec)
    with each_line_once(logger):
        name = recipes.load(recipe, overrides).name
        out = Path(out) if out else Path("runs") / safe_name(f"{name}-vary-{key}")
        check_output_folder(out, "vary")
        values = plan_values(recipe, overrides, key, texts, folds, seeds, out)
    with workers(jobs, [*command, "--out", str(out)]):
        work_through(
            [
                run
                for number, value in enumerate(values, 1)
                for run in planned_runs(value.jobs, f"value {number}/{len(values)} ({key}={value.text}), ")
            ]
        )
        markdown = write_vary(out, name, key, values, folds, seeds)
    return out, markdown


def write_vary(out: Path, name: str, key: str, values: list[Value], folds: int | None, seeds: list[int]) -> str:
    """Each value's summary, then vary.md, vary.json and vary.png, from the finished run folders (each written
    whole: workers ending at once may write them together); return the markdown."""
    run_dirs, pooled, results = {}, {}, []
    for value in values:
        run_dirs[value.text] = run_folders(value.jobs)
        summary, _ = write_summary(out / value.folder, value.jobs, run_dirs[value.text])
        pooled[value.text] = [TrackPredictions.load(out / value.folder / p["file"]) for p in summary["pooled"]]
        results.append(value_result(value, summary, pooled[value.text], run_dirs[value.text]))
    for r in results:
        r["paired_against_first"] = (
            None if r is results[0] else paired_against(pooled[r["value"]], pooled[results[0]["value"]])
        )
    summary = {
        "recipe": name,
        "key": key,
        "folds": folds,
        "seeds": seeds,
        "task": pooled[results[0]["value"]][0].task,
        "notes": {"std": STD_NOTE, **NOTES},
        "values": results,
    }
    save_figure(vary_figure(key, results), out / "vary.png")
    markdown = vary_markdown(summary, extra_sections(key, run_dirs, pooled, out))
    write_atomically(out / VARY_FILE, json.dumps(summary, indent=2))
    write_atomically(out / "vary.md", markdown)
    return markdown
