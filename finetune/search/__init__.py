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
another process counts towards N, and each process counts and starts its next trial under a lock in
the search folder (`study.claim_trial`), so together they stop at N. `--jobs N` starts N-1 such
processes beside this one (`finetune.workers`: each its share of the CPU threads and, on a GPU
machine, a GPU); this one writes the results once they have ended. Like `run()` and `cv`, this sits on top: nothing imports it but the command line.

Here: the command (checks, then the optimisation loop). `space`: the YAML space, checked; `study`:
the storage, the sampler and the worker locks; `trial`: one trial drawn, run, scored and pruned;
`results`: the tables, best.yaml, plots, the --confirm test, search.md and report.html.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

from finetune import recipe as recipes
from finetune.checks import check_recipe
from finetune.cv import SET_BY_CV
from finetune.folders import check_output_folder
from finetune.metrics import selection
from finetune.search.results import write_results, write_tables
from finetune.search.space import SearchError, check_space, load_space
from finetune.search.study import Search, claim_trial, fail_abandoned, open_study, to_start, worker_lock
from finetune.search.trial import ended_line, run_trial
from finetune.workers import is_helper, worker_prefix, workers

logger = logging.getLogger("finetune")

SET_BY_SEARCH = ("output_dir",)  # each trial's own run folder; with --folds or --confirm also SET_BY_CV
PRUNE_STARTUP = 5  # trials that must complete before the pruner stops any (optuna's MedianPruner default)
PRUNE_WARMUP = 0  # optimizer steps before a trial's evaluations are compared


def reserved_keys(folds: int | None, confirm_folds: int | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*SET_BY_SEARCH, *(SET_BY_CV if folds or confirm_folds else ())]))


def prepare(
    recipe: str,
    space_file: str | Path,
    overrides: list[str],
    folds: int | None,
    out: str | Path | None,
    confirm_folds: int | None,
) -> Search:
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


def run_trials(study: optuna.Study, setup: Search, worker: str, trials: int, timeout: float | None) -> None:
    """Claim and run trials until none is left to start for `trials` in all or `timeout` seconds have
    passed; after each, the tables rewritten and its end logged with where the count stands."""
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < timeout:
        trial = claim_trial(study, setup.out, trials)
        if trial is None:
            return
        ended = run_trial(setup, worker, study, trial)
        write_tables(study, setup)
        logger.info("%s%s; %s", worker_prefix(), ended_line(study, ended, setup), to_start(study, trials)[1])


def search(
    recipe: str,
    space_file: str | Path,
    overrides: list[str],
    trials: int,
    timeout: float | None = None,
    folds: int | None = None,
    storage: str | None = None,
    out: str | Path | None = None,
    confirm_folds: int | None = None,
    prune_startup: int = PRUNE_STARTUP,
    prune_warmup: int = PRUNE_WARMUP,
    jobs: int = 1,
    command: Sequence[str] = (),
) -> tuple[Path, str]:
    """Run (or continue) the search until `trials` trials are counted or `timeout` seconds pass;
    write its results into the search folder; return (the folder, the console summary). `jobs` > 1:
    `jobs` - 1 more workers run `command` (the arguments after `python -m finetune`, without --out)
    beside this one (`finetune.workers`); this process writes the results once they have ended (a
    helper worker writes none: its summary is '')."""
    setup = prepare(recipe, space_file, overrides, folds, out, confirm_folds)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what each trial did
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup)
    study = open_study(setup, storage, pruner)  # a storage refused leaves no folder (the default journal's is made)
    setup.out.mkdir(parents=True, exist_ok=True)

    with workers(jobs, [*command, "--out", str(setup.out)]), worker_lock(setup.out) as worker:
        fail_abandoned(study)
        remaining, standing = to_start(study, trials)
        logger.info("%ssearch %s: %s, %d to run", worker_prefix(), setup.out, standing, remaining)
        run_trials(study, setup, worker, trials, timeout)
        remaining, standing = to_start(study, trials)
        if remaining and timeout is not None:  # the timeout ended it before the trials were counted
            logger.info(
                "%ssearch stopped after --timeout %g s with %s; the same command continues it",
                worker_prefix(),
                timeout,
                standing,
            )
    if is_helper():
        return setup.out, ""
    return setup.out, write_results(study, setup, confirm_folds)
