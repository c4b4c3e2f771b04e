"""`python -m finetune search`: a resumable Optuna search over any recipe keys.

A space file maps dotted recipe keys to distributions (`space`: each value checked by loading the
recipe with it before any trial runs). Each trial is an ordinary run folder, OUT/trial-0007 (with
--folds a cross-validation folder of them, `finetune.cv.cross_validate`), scored by the recipe's selection
metric on validation (`finetune.metrics.selection`; with --folds its mean over the folds). TPE
proposes the settings; a median pruner, fed every Trainer evaluation, stops a trial that trails the
others (the run still ends and writes its folder; the trial is recorded PRUNED); with --folds it is
fed the mean over the folds so far, and a trailing trial runs no further fold.

The study lives in a journal file, OUT/journal.log, unless --storage names another (a journal file
on shared storage or an RDB URL such as sqlite:///x.db or postgresql://...): an append-only log
needs no database library, a torn last line left by a killed process is skipped when it is read
back, and its lock works on NFS, where SQLite's does not. The study is named after the search
folder and records its recipe, overrides, space and folds: the same command continues it, a changed
one is refused. A storage that cannot be opened (its driver missing, a sqlite file that cannot be
written) is refused before the search folder is made, and a folder holding another command's results
(a run, a cross-validation, a compare --vary) is refused (`finetune.folders`).

`--trials N` counts the trials that ended on their own (complete, pruned, or failed with their
error); a trial left running by a process that died (its worker lock is free) is marked FAIL without
an error and not counted, so a search killed after 2 of 4 trials ends with 4. Several processes
given the same --storage and --out run disjoint trials of one study, each trial drawn by TPE seeded
with its trial number, so processes started together draw different settings; a trial running in
another process counts towards N, so they stop at N (past it only when two start a trial at the same
moment). Like `run()` and `cv`, this sits on top: nothing imports it but the command line.

Here: the command (checks, then the optimisation loop). `space`: the YAML space, checked; `study`:
the storage, the sampler and the worker locks; `trial`: one trial drawn, run, scored and pruned;
`results`: the tables, best.yaml, plots, the --confirm test, search.md and report.html.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from finetune import recipe as recipes
from finetune.checks import check_recipe
from finetune.cv import SET_BY_CV
from finetune.folders import check_output_folder
from finetune.metrics import selection
from finetune.search.results import write_results, write_tables
from finetune.search.space import SearchError, check_space, load_space
from finetune.search.study import Search, fail_abandoned, open_study, to_start, worker_lock
from finetune.search.trial import ended_line, objective

logger = logging.getLogger("finetune")

SET_BY_SEARCH = ("output_dir",)  # each trial's own run folder; with --folds or --confirm also SET_BY_CV
PRUNE_STARTUP = 5  # trials that must complete before the pruner stops any (optuna's MedianPruner default)
PRUNE_WARMUP = 0  # optimizer steps before a trial's evaluations are compared


def reserved_keys(folds: int | None, confirm_folds: int | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*SET_BY_SEARCH, *(SET_BY_CV if folds or confirm_folds else ())]))


def prepare(recipe: str, space_file: str | Path, overrides: list[str], folds: int | None, out: str | Path | None,
            confirm_folds: int | None) -> Search:
    """Every check that needs no trial: the recipe, the overrides, the space, the search folder."""
    base = recipes.load(recipe, overrides)
    check_recipe(base)
    reserved = reserved_keys(folds, confirm_folds)
    clash = [text for text in overrides if text.split("=", 1)[0] in reserved]
    if clash:
        raise SearchError(f"search sets {', '.join(reserved)} itself: drop {' '.join(clash)}")
    space = load_space(space_file)
    check_space(recipe, overrides, space, reserved, Path(space_file))
    out = Path(out) if out else Path("runs") / f"{base.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
    check_output_folder(out, "search")
    metric, greater = selection(base.train.metric)
    return Search(recipe, list(overrides), space, out, folds, base.seed, metric, greater)


def search(recipe: str, space_file: str | Path, overrides: list[str], trials: int, timeout: float | None = None,
           folds: int | None = None, storage: str | None = None, out: str | Path | None = None,
           confirm_folds: int | None = None, prune_startup: int = PRUNE_STARTUP,
           prune_warmup: int = PRUNE_WARMUP) -> tuple[Path, str]:
    """Run (or continue) the search until `trials` trials are counted or `timeout` seconds pass;
    write its results into the search folder; return (the folder, the console summary)."""
    setup = prepare(recipe, space_file, overrides, folds, out, confirm_folds)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what each trial did
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup)
    study = open_study(setup, storage, pruner)  # a storage refused leaves no folder (the default journal's is made)
    setup.out.mkdir(parents=True, exist_ok=True)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        write_tables(study, setup)
        remaining, standing = to_start(study, trials)
        logger.info("%s; %s", ended_line(study, trial, setup), standing)
        if not remaining:
            study.stop()

    with worker_lock(setup.out) as worker:
        fail_abandoned(study)
        remaining, standing = to_start(study, trials)
        logger.info("search %s: %s, %d to run", setup.out, standing, remaining)
        if remaining:
            study.optimize(lambda trial: objective(setup, worker, trial), n_trials=remaining, timeout=timeout,
                           catch=(Exception,), callbacks=[after_trial])
            remaining, standing = to_start(study, trials)
            if remaining and timeout is not None:  # the timeout ended it before the trials were counted
                logger.info("search stopped after --timeout %g s with %s; the same command continues it", timeout,
                            standing)
    return setup.out, write_results(study, setup, confirm_folds)
