"""What a search leaves in its folder: trials.csv/md, best.yaml, history.png, importance.png, the
--confirm cross-validation (confirm.json), search.md, report.html, and the console summary."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import optuna
import yaml
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from finetune import recipe as recipes
from finetune.atomic import write_atomically
from finetune.cv import cross_validate, folder_name, pooled_leakage
from finetune.evaluation import TrackPredictions
from finetune.folders import TRIALS_FILE
from finetune.leakage import KEY as LEAKAGE_KEY, leak_cell
from finetune.report import Section, fmt, fmt_interval, render_html, render_markdown, save_figure, subplots
from finetune.rundir import RECIPE_FILE
from finetune.search.space import described, settings
from finetune.search.study import ABANDONED, Search, best_trial, counted, trial_folder
from finetune.stats.paired import paired_test

logger = logging.getLogger("finetune")

CONFIRM_FILE = "confirm.json"  # --confirm's result: both arms' pooled scores and the paired test
IMPORTANCE_MIN_TRIALS = 4  # complete trials before parameter importance is estimated (fANOVA)
NO_TRIAL_COMPLETED = "no trial completed"  # the summary's line when there is no best (the command exits 1)


def trial_rows(study: optuna.Study, search: Search) -> list[dict]:
    """One row per trial: number, state, each parameter, objective, seconds, run folder (None when there
    is none: a trial whose settings were refused made none), error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        error = t.user_attrs.get("error", ABANDONED) if t.state == TrialState.FAIL else ""
        folder = trial_folder(t.number)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                **{k: t.params.get(k) for k in search.space},
                "objective": t.value,
                "validation tracks sharing an artist": trial_leak(search.out / folder),
                "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                "run": folder if (search.out / folder).is_dir() else None,
                "error": error,
            }
        )
    return rows


def trial_leak(folder: Path) -> str:
    """The validation tracks of a trial's run (all its folds) whose artist also trained: 'k/N' ('?' when
    the data names no artist, '-' when the trial recorded none)."""
    try:
        if (folder / "summary.json").is_file():
            found = pooled_leakage(json.loads((folder / "summary.json").read_text())["runs"])
        else:
            found = json.loads((folder / "metrics.json").read_text())["test"].get(LEAKAGE_KEY)
    except (OSError, ValueError, KeyError):
        return "-"
    return leak_cell(found, "validation")


def csv_text(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def cell(value) -> str:
    """A table cell: numbers to 5 significant digits (learning rates too), None as '-'."""
    return f"{value:.5g}" if isinstance(value, float) else fmt(value)


def trials_table(rows: list[dict]) -> list[list[str]]:
    """The trials as a report table, each run folder a link ('-' where there is none)."""
    table = [list(rows[0])]
    for row in rows:
        cells = [cell(v) for v in row.values()]
        if row["run"]:
            cells[-2] = f"[{row['run']}]({row['run']})"
        table.append(cells)
    return table


def best_recipe(search: Search, best: FrozenTrial) -> recipes.Recipe:
    """The best trial's recipe as its run recorded it (the first fold's, with the recipe's own split),
    without its run folder, so that a new run gets its own."""
    run_dir = search.out / trial_folder(best.number)
    if search.folds:
        run_dir = run_dir / folder_name(0, search.seed)
    values = yaml.safe_load((run_dir / RECIPE_FILE).read_text())
    values["output_dir"], values["train"]["resume"] = None, False
    if search.folds:
        base = recipes.load(search.recipe, search.overrides).data
        values["data"].update(folds=base.folds, fold=base.fold)
    return recipes.from_dict(values)


def write_best(search: Search, best: FrozenTrial) -> Path:
    path = search.out / "best.yaml"
    header = (
        f"# The best trial ({best.number}) of the search in {search.out}: validation {search.metric} "
        f"{best.value:.4f} with {' '.join(settings(best.params))}\n"
        f"# python -m finetune --recipe {path}\n"
    )
    write_atomically(path, header + best_recipe(search, best).to_yaml())
    return path


def history_plot(study: optuna.Study, search: Search):
    """Each trial's objective (pruned: its last evaluation) and the best so far."""
    fig, ax = subplots(figsize=(7, 4))
    values = []
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        shown = [t for t in study.get_trials(deepcopy=False, states=(state,)) if t.value is not None]
        if shown:
            ax.scatter([t.number for t in shown], [t.value for t in shown], marker=marker, label=state.name.lower())
            values += [t.value for t in shown]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = (np.maximum if search.greater else np.minimum).accumulate([t.value for t in complete])
        ax.step([t.number for t in complete], best, where="post", color="k", label="best so far")
    if values and min(values) > 0 and max(values) > 100 * min(values):  # a diverged trial would flatten the rest
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {search.metric}")
    if values:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside: never over a trial
    fig.tight_layout()
    return fig


def importance_plot(study: optuna.Study):
    """fANOVA importance of each parameter; None when it cannot be estimated (e.g. no variance)."""
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        logger.warning("parameter importance not estimated: %s", err)
        return None
    fig, ax = subplots(figsize=(7, 0.5 + 0.4 * len(importances)))
    ax.barh(list(importances)[::-1], list(importances.values())[::-1])
    ax.set_xlabel("importance (fANOVA: share of the objective's variance)")
    fig.tight_layout()
    return fig


def plots(study: optuna.Study, search: Search) -> list[str]:
    """history.png, and importance.png with two parameters or more and enough complete trials."""
    images = [save_figure(history_plot(study, search), search.out / "history.png").name]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figure = importance_plot(study) if len(search.space) >= 2 and len(complete) >= IMPORTANCE_MIN_TRIALS else None
    if figure is not None:
        images.append(save_figure(figure, search.out / "importance.png").name)
    return images


def confirm(search: Search, best: FrozenTrial, folds: int) -> dict:
    """The best settings and the recipe's own, each over `folds` folds, their pooled test predictions
    compared by a paired test (best - recipe's)."""
    pooled, arms = [], {}
    for name, overrides in (
        ("confirm-best", [*search.overrides, *settings(best.params)]),
        ("confirm-packaged", search.overrides),
    ):
        out, _ = cross_validate(search.recipe, overrides, folds, [search.seed], search.out / name)
        score = json.loads((out / "summary.json").read_text())["pooled"][0]
        pooled.append(TrackPredictions.load(out / score["file"]))
        arms[name] = {"value": score["value"], "interval": score["interval"]}
    result = {"best_trial": best.number, "folds": folds, "arms": arms, **paired_test(*pooled, seed=search.seed)}
    write_atomically(search.out / CONFIRM_FILE, json.dumps(result, indent=2))
    return result


def confirmation(search: Search, best: FrozenTrial | None, folds: int | None) -> dict | None:
    """The confirmation of the best trial: run now with --confirm, else the one recorded for this same
    best trial by an earlier --confirm (a search continued without it keeps it in its report)."""
    if best is None:
        return None
    if folds:
        return confirm(search, best, folds)
    recorded = search.out / CONFIRM_FILE
    result = json.loads(recorded.read_text()) if recorded.is_file() else None
    return result if result and result.get("best_trial") == best.number else None


def confirm_line(result: dict) -> str:
    """The two arms' pooled test scores and the paired test between them."""
    best, packaged = result["arms"]["confirm-best"], result["arms"]["confirm-packaged"]
    mcnemar = f", McNemar p {result['mcnemar_p']:.3g}" if "mcnemar_p" in result else ""
    return (
        f"pooled test {result['metric']} over {result['folds']} folds ({result['tracks']} tracks): best "
        f"{best['value']:.4f} {fmt_interval(best['interval'])}, recipe's settings {packaged['value']:.4f} "
        f"{fmt_interval(packaged['interval'])}; best - recipe's {result['difference']:+.4f}, 95% interval "
        f"{fmt_interval(result['interval'])}, bootstrap p {result['bootstrap_p']:.3g}{mcnemar}"
    )


def report_sections(
    study: optuna.Study, search: Search, table: list[list[str]], images: list[str], confirmed: dict | None
) -> list[Section]:
    best = best_trial(study)
    direction = "higher" if search.greater else "lower"
    setup = [
        f"recipe {search.recipe} {' '.join(search.overrides)}".strip(),
        f"objective: validation {search.metric} ({direction} is better)"
        + (f", mean over {search.folds} folds" if search.folds else ""),
        f"{len(counted(study))} trials counted of {len(study.trials)} in the study",
        *(f"{key}: {described(d)}" for key, d in search.space.items()),
    ]
    sections = [Section("Search", text=setup)]
    if best is not None:
        sections.append(
            Section(
                "Best trial",
                text=[
                    f"trial {best.number}: validation {search.metric} {best.value:.4f}",
                    " ".join(settings(best.params)),
                    f"run folder {trial_folder(best.number)}; recipe best.yaml",
                ],
            )
        )
    sections += [Section("Trials", tables=[table]), Section("Plots", images=images)]
    if confirmed:
        sections.append(Section("Confirmation", text=[confirm_line(confirmed)]))
    return sections


def summary_text(study: optuna.Study, search: Search, confirmed: dict | None) -> str:
    """What the command prints at the end."""
    states = [t.state.name.lower() for t in study.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    lines = [f"search {search.recipe}: {len(study.trials)} trials ({counts or 'none'}) in {search.out}"]
    best = best_trial(study)
    if best is None:
        lines.append(f"  {NO_TRIAL_COMPLETED}")
    else:
        lines += [
            f"  best: trial {best.number}, validation {search.metric} {best.value:.4f}",
            f"  params: {' '.join(settings(best.params))}",
            f"  recipe: python -m finetune --recipe {search.out / 'best.yaml'}",
        ]
    if confirmed:
        lines.append(f"  confirm: {confirm_line(confirmed)}")
    lines += [f"  trials: {search.out / 'trials.md'}", f"  report: {search.out / 'report.html'}"]
    return "\n".join(lines)


def write_tables(study: optuna.Study, search: Search) -> list[list[str]]:
    """trials.csv and trials.md (rewritten after every trial); the table."""
    rows = trial_rows(study, search)
    if not rows:
        return [["number"]]
    table = trials_table(rows)
    write_atomically(search.out / TRIALS_FILE, csv_text(rows))
    write_atomically(
        search.out / "trials.md",
        render_markdown(f"finetune search: {search.recipe}", [Section("Trials", tables=[table])]),
    )
    return table


def write_results(study: optuna.Study, search: Search, confirm_folds: int | None) -> str:
    """The tables, best.yaml, the plots, search.md and report.html (and the confirmation, confirm.json);
    the summary."""
    table = write_tables(study, search)
    best = best_trial(study)
    if best is not None:
        write_best(search, best)
    confirmed = confirmation(search, best, confirm_folds)
    sections = report_sections(study, search, table, plots(study, search), confirmed)
    title = f"finetune search: {search.recipe}"
    write_atomically(search.out / "search.md", render_markdown(title, sections))
    write_atomically(search.out / "report.html", render_html(title, sections, search.out))
    return summary_text(study, search, confirmed)
