"""One trial of a search: its settings drawn, its run (or cross-validation) scored on validation, and
the pruner fed as it goes."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from finetune import recipe as recipes
from finetune.cv import cross_validate
from finetune.run import run
from finetune.search.space import setting, settings
from finetune.search.study import Search, best_trial, trial_folder
from finetune.workers import worker_prefix

logger = logging.getLogger("finetune")


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
            logger.info(
                "%strial %d pruned at step %d (validation %s %.4f)",
                worker_prefix(),
                self.trial.number,
                state.global_step,
                self.key.removeprefix("eval_"),
                value,
            )
            self.pruned = control.should_training_stop = True


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
            logger.info(
                "%strial %d pruned after fold %d of %d (mean validation %s %.4f)",
                worker_prefix(),
                trial.number,
                len(scores),
                search.folds,
                search.metric,
                np.mean(scores),
            )
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
    logger.info("%strial %d: %s", worker_prefix(), trial.number, " ".join(settings(params)))
    try:
        value, pruned = score(search, trial, [*search.overrides, *settings(params)])
        if math.isnan(value):
            raise ValueError(f"validation {search.metric} is NaN: the run diverged")
    except Exception as err:
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000]
        trial.set_user_attr("error", error)
        logger.warning(
            "%strial %d failed: %s", worker_prefix(), trial.number, error
        )  # one line; optuna's own log is quieted
        raise
    if pruned:
        raise optuna.TrialPruned(f"trial {trial.number} trailed the median")
    return value


def run_trial(search: Search, worker: str, study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """Run a claimed trial and record how it ended: COMPLETE with its score, PRUNED (its last evaluation
    its value), or FAIL (its error recorded by `objective`)."""
    try:
        value = objective(search, worker, trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)
    except Exception:
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, value)


def ended_line(study: optuna.Study, trial: FrozenTrial, search: Search) -> str:
    """A trial's end in one line: its state, score and seconds, and the best trial so far."""
    seconds = f" in {trial.duration.total_seconds():.0f} s" if trial.duration else ""
    if trial.state == TrialState.COMPLETE:
        line = f"trial {trial.number} complete{seconds}: validation {search.metric} {trial.value:.4f}"
    else:
        line = f"trial {trial.number} {trial.state.name.lower()}{seconds}"
    best = best_trial(study)
    return line + (f" (best so far: trial {best.number}, {best.value:.4f})" if best else "")
