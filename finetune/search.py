"""`python -m finetune search`: a resumable Optuna search over any recipe keys.

A space file maps dotted recipe keys to distributions (`finetune.search_space`: each value checked
by loading the recipe with it before any trial runs). Each trial is an ordinary run folder, OUT/trial-0007 (with --folds a
cross-validation folder of them, `finetune.cv.cross_validate`), scored by the recipe's selection
metric on validation (`finetune.metrics.selection`; with --folds its mean over the folds). TPE
proposes the settings; a median pruner, fed every Trainer evaluation, stops a trial that trails the
others (the run still ends and writes its folder; the trial is recorded PRUNED); with --folds it is
fed the mean over the folds so far, and a trailing trial runs no further fold.

The study lives in a journal file, OUT/journal.log, unless --storage names another (a journal file
on shared storage or an RDB URL such as sqlite:///x.db or postgresql://...): an append-only log
needs no database library, a torn last line left by a killed process is skipped when it is read
back, and its lock works on NFS, where SQLite's does not. The study is named after the search
folder and records its recipe, overrides, space and folds: the same command continues it, a changed
one is refused. `--trials N` counts the trials that ended on their own (complete, pruned, or failed
with their error); a trial left running by a process that died (its worker lock is free) is marked
FAIL without an error and not counted, so a search killed after 2 of 4 trials ends with 4. Several
processes given the same --storage and --out run disjoint trials of one study, each trial drawn by
TPE seeded with its trial number, so processes started together draw different settings (each
process may finish one trial past N while another finishes the last). Like `run()` and `cv`, this sits on top:
nothing imports it but the command line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import optuna
import yaml
from filelock import FileLock, Timeout
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution, distribution_to_json
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from finetune import recipe as recipes
from finetune.atomic import write_atomically
from finetune.checks import check_recipe
from finetune.cv import SET_BY_CV, cross_validate, folder_name
from finetune.evaluation import TrackPredictions
from finetune.metrics import selection
from finetune.report import Section, fmt, fmt_interval, render_html, render_markdown, save_figure
from finetune.rundir import RECIPE_FILE
from finetune.run import run
from finetune.search_space import SearchError, check_space, described, load_space, setting, settings
from finetune.studies.paired import paired_test

logger = logging.getLogger("finetune")

SET_BY_SEARCH = ("output_dir",)  # each trial's own run folder; with --folds or --confirm also SET_BY_CV
JOURNAL_FILE = "journal.log"  # the default storage, in the search folder
CONFIRM_FILE = "confirm.json"  # --confirm's result: both arms' pooled scores and the paired test
WORKERS_DIR = ".workers"  # each search process's lock, held while it searches
PRUNE_STARTUP = 5  # trials that must complete before the pruner stops any (optuna's MedianPruner default)
PRUNE_WARMUP = 0  # optimizer steps before a trial's evaluations are compared
IMPORTANCE_MIN_TRIALS = 4  # complete trials before parameter importance is estimated (fANOVA)
NO_TRIAL_COMPLETED = "no trial completed"  # the summary's line when there is no best (the command exits 1)
ABANDONED = "abandoned: its search process ended before the trial did (not counted)"


# --------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class Search:
    """What every trial of a search shares."""

    recipe: str
    overrides: list[str]
    space: dict[str, BaseDistribution]
    out: Path
    folds: int | None
    seed: int
    metric: str
    greater: bool

    def identity(self) -> dict:
        """What the study records and a resumed search must match."""
        return {"recipe": self.recipe, "overrides": list(self.overrides), "folds": self.folds,
                "space": {key: json.loads(distribution_to_json(d)) for key, d in self.space.items()}}


def storage_of(out: Path, storage: str | None):
    """An RDB URL as it is, else a journal file (default OUT/journal.log)."""
    if storage and "://" in storage:
        return storage
    path = Path(storage).expanduser() if storage else out / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def open_study(search: Search, storage: str | None, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The search folder's study, created or continued; refused when it was started with other settings.
    TPE is seeded per trial (TrialSeededTPE)."""
    study = optuna.create_study(storage=storage_of(search.out, storage), study_name=search.out.resolve().name,
                                direction="maximize" if search.greater else "minimize", pruner=pruner,
                                load_if_exists=True)
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", search.identity())
    elif recorded != search.identity():
        changed = [key for key in recorded if recorded[key] != search.identity().get(key)]
        raise SearchError(f"{search.out}: its study was started with other settings ({', '.join(changed)}); "
                          "run the same command to continue it, or give another --out")
    study.sampler = TrialSeededTPE(search.seed)
    return study


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE seeded afresh for each trial from (the search seed, the trial's number). Trial numbers are
    unique in a study, so processes that start together on one study never draw the same settings (one
    TPE seeded per process would: the same seed and history give the same draw), a resumed search draws
    new ones, and a fresh search is reproducible. The pair goes through numpy's SeedSequence: seeding
    with seed + number made neighbouring streams (Mersenne Twister seeds 0 and 3 start 0.549, 0.715
    and 0.551, 0.708) draw near-identical settings."""

    def __init__(self, seed: int):
        self.seed = seed
        self.tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        stream = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
        self.tpe = optuna.samplers.TPESampler(seed=stream)
        self.tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict:
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution):
        return self.tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.tpe.after_trial(study, trial, state, values)


@contextlib.contextmanager
def worker_lock(out: Path) -> Iterator[str]:
    """This process's lock file (absolute path), held while it searches: a running trial whose
    worker's lock is free was left by a process that died."""
    path = out.resolve() / WORKERS_DIR / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(str(path), timeout=0)
    held.acquire()
    try:
        yield str(path)
    finally:
        held.release()


def worker_alive(path: str) -> bool:
    """False when the worker's lock file is there and free; a file this host cannot see: alive."""
    if not Path(path).is_file():
        return True
    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def fail_abandoned(study: optuna.Study) -> None:
    """Mark FAIL (without an error: not counted) each running trial whose process died."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker and not worker_alive(worker):
            logger.warning("trial %d: %s", trial.number, ABANDONED)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ended on their own: complete, pruned, or failed with their error."""
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return [t for t in ended if t.state != TrialState.FAIL or "error" in t.user_attrs]


# --------------------------------------------------------------------------- one trial


class PruneTrial(TrainerCallback):
    """Reports each validation score to the trial; stops training when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.key, self.pruned = trial, f"eval_{metric}", False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.key)
        if value is None:
            return
        self.trial.report(float(value), state.global_step)
        if self.trial.should_prune():
            logger.info("trial %d pruned at step %d (validation %s %.4f)", self.trial.number, state.global_step,
                        self.key.removeprefix("eval_"), value)
            self.pruned = control.should_training_stop = True


def trial_folder(number: int) -> str:
    return f"trial-{number:04d}"


class FoldsPruned(Exception):
    """A cross-validated trial's folds so far trail the median: its remaining folds are not run."""


def validation_score(run_dir: Path, metric: str) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["validation"][metric]


def score_folds(search: Search, trial: optuna.Trial, overrides: list[str], folder: Path) -> tuple[float, bool]:
    """(the mean validation score over the folds, whether it was pruned): after each fold the mean so far
    is reported (step = folds done; every trial has the same folds), and a trial trailing the median
    stops there, its cross-validation folder left without a summary."""
    scores = []

    def report(run_dir: Path) -> None:
        scores.append(validation_score(run_dir, search.metric))
        trial.report(float(np.mean(scores)), len(scores))
        if len(scores) < search.folds and trial.should_prune():
            logger.info("trial %d pruned after fold %d of %d (mean validation %s %.4f)", trial.number,
                        len(scores), search.folds, search.metric, np.mean(scores))
            raise FoldsPruned

    try:
        cross_validate(search.recipe, overrides, search.folds, [search.seed], folder, after_run=report)
    except FoldsPruned:
        return float(np.mean(scores)), True
    return float(np.mean(scores)), False


def score(search: Search, trial: optuna.Trial, overrides: list[str]) -> tuple[float, bool]:
    """(the trial's validation score, whether it was pruned): one run, pruned on its evaluations, or the
    mean over the folds, pruned between folds."""
    folder = search.out / trial_folder(trial.number)
    if search.folds:
        return score_folds(search, trial, overrides, folder)
    pruning = PruneTrial(trial, search.metric)
    recipe = recipes.load(search.recipe, [*overrides, setting("output_dir", str(folder))])
    return validation_score(run(recipe, callbacks=(pruning,)), search.metric), pruning.pruned


def objective(search: Search, worker: str, trial: optuna.Trial) -> float:
    """Run the trial's settings; record its error (FAIL) or raise TrialPruned."""
    trial.set_user_attr("worker", worker)
    params = {}
    for key, dist in search.space.items():
        if isinstance(dist, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            params[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    logger.info("trial %d: %s", trial.number, " ".join(settings(params)))
    try:
        value, pruned = score(search, trial, [*search.overrides, *settings(params)])
        if math.isnan(value):
            raise ValueError(f"validation {search.metric} is NaN: the run diverged")
    except Exception as err:
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000]
        trial.set_user_attr("error", error)
        logger.warning("trial %d failed: %s", trial.number, error)  # one line; optuna's own log is quieted
        raise
    if pruned:
        raise optuna.TrialPruned(f"trial {trial.number} trailed the median")
    return value


def ended_line(study: optuna.Study, trial: FrozenTrial, search: Search) -> str:
    """A trial's end in one line: its state, score and seconds, and the best trial so far."""
    seconds = f" in {trial.duration.total_seconds():.0f} s" if trial.duration else ""
    if trial.state == TrialState.COMPLETE:
        line = f"trial {trial.number} complete{seconds}: validation {search.metric} {trial.value:.4f}"
    else:
        line = f"trial {trial.number} {trial.state.name.lower()}{seconds}"
    best = best_trial(study)
    return line + (f"; best so far trial {best.number} ({best.value:.4f})" if best else "")


# --------------------------------------------------------------------------- results


def trial_rows(study: optuna.Study, search: Search) -> list[dict]:
    """One row per trial: number, state, each parameter, objective, seconds, run folder, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        error = t.user_attrs.get("error", ABANDONED) if t.state == TrialState.FAIL else ""
        rows.append({"number": t.number, "state": t.state.name, **{k: t.params.get(k) for k in search.space},
                     "objective": t.value, "seconds": round(t.duration.total_seconds(), 1) if t.duration else None,
                     "run": trial_folder(t.number), "error": error})
    return rows


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
    """The trials as a report table, each run folder a link."""
    table = [list(rows[0])]
    for row in rows:
        cells = [cell(v) for v in row.values()]
        cells[-2] = f"[{row['run']}]({row['run']})"
        table.append(cells)
    return table


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


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
    header = (f"# The best trial ({best.number}) of the search in {search.out}: validation {search.metric} "
              f"{best.value:.4f} with {' '.join(settings(best.params))}\n"
              f"# python -m finetune --recipe {path}\n")
    write_atomically(path, header + best_recipe(search, best).to_yaml())
    return path


def history_plot(study: optuna.Study, search: Search):
    """Each trial's objective (pruned: its last evaluation) and the best so far."""
    fig, ax = plt.subplots(figsize=(7, 4))
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
        ax.legend()
    fig.tight_layout()
    return fig


def importance_plot(study: optuna.Study):
    """fANOVA importance of each parameter; None when it cannot be estimated (e.g. no variance)."""
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        logger.warning("parameter importance not estimated: %s", err)
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * len(importances)))
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
    for name, overrides in (("confirm-best", [*search.overrides, *settings(best.params)]),
                            ("confirm-packaged", search.overrides)):
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
    return (f"pooled test {result['metric']} over {result['folds']} folds ({result['tracks']} tracks): best "
            f"{best['value']:.4f} {fmt_interval(best['interval'])}, recipe's settings {packaged['value']:.4f} "
            f"{fmt_interval(packaged['interval'])}; best - recipe's {result['difference']:+.4f}, 95% interval "
            f"{fmt_interval(result['interval'])}, bootstrap p {result['bootstrap_p']:.3g}{mcnemar}")


def report_sections(study: optuna.Study, search: Search, table: list[list[str]], images: list[str],
                    confirmed: dict | None) -> list[Section]:
    best = best_trial(study)
    direction = "higher" if search.greater else "lower"
    setup = [f"recipe {search.recipe} {' '.join(search.overrides)}".strip(),
             f"objective: validation {search.metric} ({direction} is better)"
             + (f", mean over {search.folds} folds" if search.folds else ""),
             f"{len(counted(study))} trials counted of {len(study.trials)} in the study",
             *(f"{key}: {described(d)}" for key, d in search.space.items())]
    sections = [Section("Search", text=setup)]
    if best is not None:
        sections.append(Section("Best trial", text=[
            f"trial {best.number}: validation {search.metric} {best.value:.4f}", " ".join(settings(best.params)),
            f"run folder {trial_folder(best.number)}; recipe best.yaml"]))
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
        lines += [f"  best: trial {best.number}, validation {search.metric} {best.value:.4f}",
                  f"  params: {' '.join(settings(best.params))}",
                  f"  recipe: python -m finetune --recipe {search.out / 'best.yaml'}"]
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
    write_atomically(search.out / "trials.csv", csv_text(rows))
    write_atomically(search.out / "trials.md", render_markdown(f"finetune search: {search.recipe}",
                                                               [Section("Trials", tables=[table])]))
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


# --------------------------------------------------------------------------- the command


def reserved_keys(folds: int | None, confirm_folds: int | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*SET_BY_SEARCH, *(SET_BY_CV if folds or confirm_folds else ())]))


def prepare(recipe: str, space_file: str | Path, overrides: list[str], folds: int | None, out: str | Path | None,
            confirm_folds: int | None) -> Search:
    """Every check that needs no trial: the recipe, the overrides, the space."""
    base = recipes.load(recipe, overrides)
    check_recipe(base)
    reserved = reserved_keys(folds, confirm_folds)
    clash = [text for text in overrides if text.split("=", 1)[0] in reserved]
    if clash:
        raise SearchError(f"search sets {', '.join(reserved)} itself: drop {' '.join(clash)}")
    space = load_space(space_file)
    check_space(recipe, overrides, space, reserved, Path(space_file))
    out = Path(out) if out else Path("runs") / f"{base.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
    metric, greater = selection(base.train.metric)
    return Search(recipe, list(overrides), space, out, folds, base.seed, metric, greater)


def search(recipe: str, space_file: str | Path, overrides: list[str], trials: int, timeout: float | None = None,
           folds: int | None = None, storage: str | None = None, out: str | Path | None = None,
           confirm_folds: int | None = None, prune_startup: int = PRUNE_STARTUP,
           prune_warmup: int = PRUNE_WARMUP) -> tuple[Path, str]:
    """Run (or continue) the search until `trials` trials are counted or `timeout` seconds pass;
    write its results into the search folder; return (the folder, the console summary)."""
    setup = prepare(recipe, space_file, overrides, folds, out, confirm_folds)
    setup.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what each trial did
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup)
    study = open_study(setup, storage, pruner)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        write_tables(study, setup)
        done = len(counted(study))
        logger.info("%s (%d of %d trials counted)", ended_line(study, trial, setup), done, trials)
        if done >= trials:
            study.stop()

    with worker_lock(setup.out) as worker:
        fail_abandoned(study)
        remaining = max(trials - len(counted(study)), 0)
        logger.info("search %s: %d trials counted, %d to run", setup.out, trials - remaining, remaining)
        if remaining:
            study.optimize(lambda trial: objective(setup, worker, trial), n_trials=remaining, timeout=timeout,
                           catch=(Exception,), callbacks=[after_trial])
    return setup.out, write_results(study, setup, confirm_folds)
