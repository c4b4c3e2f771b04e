"""`python -m finetune cv`: one recipe trained on every cross-validation fold and seed, summarised.

Each (fold, seed) is an ordinary run folder inside the cross-validation folder (`fold{i}-seed{s}`,
or `seed{s}` on the dataset's own split), trained one after the other by this process, or shared
with other worker processes here or on other machines (`--jobs`, `finetune.workers`). summary.md
and summary.json hold each run's headline test scores, the mean and sample standard deviation
(ddof=1) over the runs of every scalar metric, and each seed's test predictions pooled over the
folds (predictions/test-seed{s}.npz, every track once) with the pooled headline metric and its
95 % bootstrap interval. Run again into the same folder, it continues: a finished run with the same
settings is kept, a stopped one resumed, a finished one with other settings refused. Like `run()`,
this sits on top: nothing imports it but the command line (and `vary`, which runs one per value).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune import recipe as recipes
from finetune.atomic import write_atomically, written_whole
from finetune.checks import check_recipe
from finetune.console import each_line_once
from finetune.data.recipe_data import check_folds
from finetune.evaluation import TrackPredictions, scalar_metrics
from finetune.folders import check_output_folder
from finetune.leakage import KEY as LEAKAGE_KEY, leak_cell, leakage_text
from finetune.metrics import headline, summary_names, task_of
from finetune.report import Section, fmt, fmt_interval, render_markdown
from finetune.run import run
from finetune.rundir import RunFolderError, changed_settings, check_resume, holds_run, is_finished, recorded_recipe
from finetune.stats.bootstrap import RESAMPLES, headline_interval
from finetune.training import runnable_precision
from finetune.workers import work_through, workers

logger = logging.getLogger("finetune")

SET_BY_CV = ("seed", "output_dir", "data.folds", "data.fold")  # from --seeds, --out and --folds
STD_NOTE = "sample standard deviation (ddof=1) over the runs"


@dataclass(frozen=True)
class Job:
    """One run of the cross-validation: its fold (None: the dataset's own split), seed and recipe."""

    fold: int | None
    seed: int
    recipe: recipes.Recipe

    @property
    def label(self) -> str:
        return f"seed {self.seed}" if self.fold is None else f"fold {self.fold}, seed {self.seed}"


def folder_name(fold: int | None, seed: int) -> str:
    return f"seed{seed}" if fold is None else f"fold{fold}-seed{seed}"


def plan(name_or_path: str, overrides: list[str], folds: int | None, seeds: list[int], out: Path) -> list[Job]:
    """Every (seed, fold) recipe, seeds outermost, each loaded and checked before anything trains (and
    against the finished run already in its folder, if any)."""
    clash = [o for o in overrides if o.split("=", 1)[0] in SET_BY_CV]
    if clash:
        raise recipes.RecipeError(
            f"the cross-validation sets {', '.join(SET_BY_CV)} itself (from --seeds, --out, "
            f"--folds): drop {' '.join(clash)}"
        )
    if not seeds or len(set(seeds)) != len(seeds):
        raise recipes.RecipeError(f"--seeds: give distinct seeds, not {seeds}")
    jobs = []
    for seed in seeds:
        for fold in range(folds) if folds else [None]:
            settings = [
                f"seed={seed}",
                f"output_dir={json.dumps(str(out / folder_name(fold, seed)))}",
                f"data.folds={folds or 'null'}",
                f"data.fold={fold or 0}",
            ]
            recipe = recipes.load(name_or_path, [*overrides, *settings])
            check_recipe(recipe)
            check_existing(recipe)
            jobs.append(Job(fold, seed, recipe))
    if folds:  # classes no fold can test on unseen artists: refused, or said once, before any run
        flagged = check_folds(jobs[0].recipe)
        if flagged:
            logger.warning(
                "data.unsplittable=%s: %s cannot be tested on artists training has not seen (every "
                "track of each by too few artists)",
                jobs[0].recipe.data.unsplittable,
                ", ".join(flagged),
            )
    return jobs


def check_existing(recipe: recipes.Recipe) -> None:
    """Refuse a run already in the recipe's output_dir whose recorded recipe is not `recipe` (as it would
    run here), naming the keys that differ (those a resume may change aside): a finished run is kept, a
    stopped one is refused as its resume would be (`finetune.rundir.check_resume`)."""
    folder, planned = Path(recipe.output_dir), runnable_precision(recipe)
    if not is_finished(folder):
        if holds_run(folder):
            check_resume(folder, planned)
        return
    recorded = recorded_recipe(folder)
    if recorded is None:
        raise RunFolderError(f"{folder} holds a finished run without a recorded recipe.yaml; choose another --out")
    changed = changed_settings(recorded, planned)
    if changed:
        raise RunFolderError(
            f"{folder} holds a finished run with other settings ({changed}); it is kept: "
            "drop these overrides, or choose another --out"
        )


def run_or_reuse(recipe: recipes.Recipe) -> Path:
    """The run of `recipe` in its output_dir: a finished run there is kept (`plan` checked it),
    a stopped one resumed (from its last checkpoint, or from the start when it has none), else it runs."""
    folder = Path(recipe.output_dir)
    if is_finished(folder):
        logger.info("kept the finished run %s", folder)
        return folder
    if holds_run(folder):
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, resume=True))
    return run(recipe)


def run_folders(jobs: list[Job]) -> list[Path]:
    return [Path(job.recipe.output_dir) for job in jobs]


def planned_runs(jobs: list[Job], prefix: str = "") -> list[tuple[Path, str, Callable[[], Path]]]:
    """Each job as `workers.work_through` takes it: its folder, its progress line (`prefix` first), its start."""
    return [
        (folder, f"{prefix}run {number}/{len(jobs)}: {job.label}", functools.partial(run_or_reuse, job.recipe))
        for number, (job, folder) in enumerate(zip(jobs, run_folders(jobs)), 1)
    ]


def run_all(jobs: list[Job], prefix: str = "", after_run: Callable[[Path], None] | None = None) -> list[Path]:
    """Each job's run folder, run or reused in order, with a progress line per run (`prefix` first);
    a run another worker holds is passed over and waited for (`workers.work_through`); `after_run(run
    folder)` after each (it may raise to stop the rest)."""
    work_through(planned_runs(jobs, prefix), after_run)
    return run_folders(jobs)


def pool(predictions: list[TrackPredictions]) -> TrackPredictions:
    """The test predictions of disjoint runs (one per fold) as one split, in run order."""
    first = predictions[0]
    ids = [track for p in predictions for track in p.ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"pooled test predictions: {len(ids) - len(set(ids))} tracks tested more than once")
    if any(p.label_names != first.label_names for p in predictions):
        raise ValueError("pooled test predictions: the runs have different classes")
    return TrackPredictions(
        ids,
        [path for p in predictions for path in p.paths],
        np.concatenate([p.probs for p in predictions]),  # (N, C)
        np.concatenate([p.labels for p in predictions]),
        first.label_names,
    )


def finite(value: float) -> float | None:
    """JSON has no NaN: None instead."""
    return None if np.isnan(value) else float(value)


def mean_std(runs: list[dict], split: str) -> dict[str, dict]:
    """{metric: {mean, std, runs}} of every scalar metric of `split` over the runs reporting it
    (std with ddof=1; None from one run)."""
    result = {}
    for key in dict.fromkeys(k for r in runs for k in r[split]):
        values = np.array([r[split][key] for r in runs if key in r[split]], dtype=np.float64)  # (R,)
        std = finite(values.std(ddof=1)) if len(values) > 1 else None
        result[key] = {"mean": finite(values.mean()), "std": std, "runs": len(values)}
    return result


def pooled_scores(out: Path, jobs: list[Job], run_dirs: list[Path]) -> list[dict]:
    """Each seed's test predictions pooled over its runs, saved to out/predictions/test-seed{s}.npz,
    with the pooled headline metric and its 95 % bootstrap interval."""
    result = []
    for seed in dict.fromkeys(job.seed for job in jobs):
        tracks = pool(
            [
                TrackPredictions.load(d / "predictions" / "test.npz")
                for job, d in zip(jobs, run_dirs)
                if job.seed == seed
            ]
        )
        path = out / "predictions" / f"test-seed{seed}.npz"
        with written_whole(path) as temporary:
            tracks.save(temporary)
        value, interval = headline_interval(tracks, seed=seed)
        result.append(
            {
                "seed": seed,
                "file": path.relative_to(out).as_posix(),
                "tracks": len(tracks.ids),
                "metric": headline(tracks.task).name,
                "value": value,
                "interval": interval,
                "resamples": RESAMPLES[tracks.task],
            }
        )
    return result


def summarise(out: Path, jobs: list[Job], run_dirs: list[Path]) -> dict:
    """summary.json's content: the runs' scalar metrics, their mean and std, the pooled scores."""
    metrics = [json.loads((run_dir / "metrics.json").read_text()) for run_dir in run_dirs]
    runs = [
        {
            "fold": job.fold,
            "seed": job.seed,
            "run": os.path.relpath(run_dir, out),
            **{split: scalar_metrics(m.get(split, {})) for split in ("test", "validation")},
            LEAKAGE_KEY: m.get("test", {}).get(LEAKAGE_KEY),
        }
        for job, run_dir, m in zip(jobs, run_dirs, metrics)
    ]
    first = jobs[0].recipe
    absent = [m.get("test", {}).get("classes_without_tracks", []) for m in metrics]
    return {
        "recipe": first.name,
        "folds": first.data.folds,
        "seeds": list(dict.fromkeys(j.seed for j in jobs)),
        "headline": summary_names(task_of(metrics[0]["test"])),
        "std": STD_NOTE,
        "runs": runs,
        "classes_without_test_tracks": {
            name: sum(name in a for a in absent) for name in dict.fromkeys(n for a in absent for n in a)
        },
        "unsplittable": first.data.unsplittable,
        "mean_std": {split: mean_std(runs, split) for split in ("test", "validation")},
        "pooled": pooled_scores(out, jobs, run_dirs),
    }


def pooled_leakage(runs: list[dict]) -> dict | None:
    """The runs' leaks added up (each track is tested once per seed); None when a run has none recorded."""
    found = [r.get(LEAKAGE_KEY) for r in runs]
    if not found or not all(found):
        return None
    counts = [
        key for key in found[0] if key.endswith(("_tracks", "_sharing", "_shared")) and all(key in f for f in found)
    ]
    return {
        "group_by": found[0]["group_by"],
        "groups_known": all(f["groups_known"] for f in found),
        **{key: sum(f[key] for f in found) for key in counts},
    }


def absent_classes_text(summary: dict) -> str:
    """The classes some runs tested no track of (left out by data.unsplittable=leave_out, or too rare),
    which those runs' macro averages leave out; '' when every run tested every class."""
    absent = summary.get("classes_without_test_tracks") or {}
    if not absent:
        return ""
    listed = ", ".join(f"{name} ({count} of {len(summary['runs'])} runs)" for name, count in absent.items())
    return (
        f"classes without test tracks: {listed}; data.unsplittable={summary.get('unsplittable')}. Those runs' "
        "macro averages are over the classes they tested, and the pooled scores hold no track of a class no "
        "run tested."
    )


def summary_markdown(summary: dict) -> str:
    """summary.md: the runs, the mean ± std table, the pooled scores."""
    keys = summary["headline"]
    runs = [["fold", "seed", *keys, "test tracks sharing an artist", "run"]]
    runs += [
        [
            fmt(r["fold"]),
            str(r["seed"]),
            *(fmt(r["test"].get(k)) for k in keys),
            leak_cell(r.get(LEAKAGE_KEY)),
            f"[{r['run']}]({r['run']})",
        ]
        for r in summary["runs"]
    ]
    spread = [["metric", "test", "validation"]]
    aggregate = summary["mean_std"]
    for key in dict.fromkeys([*aggregate["test"], *aggregate["validation"]]):
        cells = [aggregate[split].get(key) for split in ("test", "validation")]
        spread.append([key, *(f"{fmt(c['mean'])} ± {fmt(c['std'])}" if c else "-" for c in cells)])
    pooled = [["seed", "tracks", "metric", "pooled", "95% interval", "predictions"]]
    pooled += [
        [str(p["seed"]), str(p["tracks"]), p["metric"], fmt(p["value"]), fmt_interval(p["interval"]), p["file"]]
        for p in summary["pooled"]
    ]
    count = len(summary["runs"])
    folds = f"{summary['folds']} folds" if summary["folds"] else "the dataset's own split"
    leak = leakage_text(pooled_leakage(summary["runs"]))
    sections = [
        Section(
            f"Runs: {folds} x seeds {', '.join(map(str, summary['seeds']))}",
            text=[line for line in (leak, absent_classes_text(summary)) if line],
            tables=[runs],
        ),
        Section(f"Mean ± std over {count} runs", text=[f"std: {STD_NOTE}"], tables=[spread]),
        Section(
            "Pooled test predictions",
            text=[
                "each seed's test predictions over all its runs, every track once; 95% bootstrap interval over "
                f"tracks ({summary['pooled'][0]['resamples']} resamples)"
            ],
            tables=[pooled],
        ),
    ]
    return render_markdown(f"finetune cross-validation: {summary['recipe']}", sections)


def write_summary(out: Path, jobs: list[Job], run_dirs: list[Path]) -> tuple[dict, str]:
    """Write out/summary.json and summary.md (and the pooled predictions); return both."""
    summary = summarise(out, jobs, run_dirs)
    markdown = summary_markdown(summary)
    write_atomically(out / "summary.json", json.dumps(summary, indent=2))
    write_atomically(out / "summary.md", markdown)
    return summary, markdown


def cross_validate(
    recipe_name_or_path: str,
    overrides: list[str],
    folds: int | None,
    seeds: list[int],
    out: str | Path | None = None,
    after_run: Callable[[Path], None] | None = None,
    jobs: int = 1,
    command: Sequence[str] = (),
) -> tuple[Path, str]:
    """Train and evaluate the recipe on every fold (None: the dataset's own split) with every
    seed; write summary.json, summary.md and the pooled test predictions into `out` (default
    runs/<recipe name>-cv-<timestamp>); return (out, summary markdown). Into an existing `out`,
    finished runs are kept, stopped ones resumed (`run_or_reuse`) and those another process holds
    waited for. `jobs` > 1: `jobs` - 1 more workers run `command` (the arguments after `python -m
    finetune`, without --out) beside this one (`finetune.workers`). `after_run` sees each run folder
    as it ends (see `run_all`)."""
    with each_line_once(logger):  # planning loads the recipe once per run: its warnings are said once
        name = recipes.load(recipe_name_or_path, overrides).name
        out = Path(out) if out else Path("runs") / f"{name}-cv-{time.strftime('%Y%m%d-%H%M%S')}"
        check_output_folder(out, "cv")
        planned = plan(recipe_name_or_path, overrides, folds, seeds, out)
    with workers(jobs, [*command, "--out", str(out)]):
        _, markdown = write_summary(out, planned, run_all(planned, after_run=after_run))
    logger.info("cross-validation summary: %s", out / "summary.md")
    return out, markdown
