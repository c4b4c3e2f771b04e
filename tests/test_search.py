"""`search`: a demo search writes its tables, plots and a runnable best recipe, prunes an absurd
learning rate, continues after SIGKILL to exactly the asked number of trials, shares one study
between two processes, and refuses a bad space before any trial."""

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest

from finetune import recipe as recipes
from finetune.cli import main
from finetune.search.study import ABANDONED, TrialSeededTPE, to_start

TINY = ["train.batch_size=4", "data.num_workers=0", "data.max_tracks=5", "eval.durations=null"]
EVALS = 4  # evaluations scheduled in the pruning search: every 3 of 12 steps


def search_command(root, space, out, trials, *options):
    return [
        "search",
        "--recipe",
        "demo",
        "--space",
        str(space),
        "--out",
        str(out),
        "--trials",
        str(trials),
        *options,
        *TINY,
        f"data.root={root}",
    ]


def trials_of(out) -> list[dict]:
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def pruned_search(synthetic_root, tmp_path_factory):
    """4 trials over a sane and an absurd learning rate, evaluated every 3 of 12 steps, pruning after
    one complete trial: (folder, printed summary, progress lines)."""
    folder = tmp_path_factory.mktemp("search")
    space = folder / "space.yaml"
    space.write_text("train.lr: {choices: [0.002, 1000.0]}\ntrain.weight_decay: {low: 0.0, high: 0.01}\n")
    printed, progress = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(progress):
        code = main(
            search_command(
                synthetic_root,
                space,
                folder / "out",
                4,
                "--prune-startup",
                "1",
                "train.max_steps=12",
                "train.eval_steps=3",
                "train.save_steps=3",
            )
        )
    assert code == 0
    return folder / "out", printed.getvalue(), progress.getvalue()


@pytest.mark.slow
def test_a_search_writes_its_tables_plots_and_best_recipe(pruned_search):
    out, printed, progress = pruned_search
    rows = trials_of(out)
    assert [row["number"] for row in rows] == ["0", "1", "2", "3"]
    assert {"train.lr", "train.weight_decay", "objective", "seconds", "run"} <= set(rows[0])
    markdown = (out / "trials.md").read_text()
    for row in rows:
        assert (out / row["run"] / "metrics.json").is_file()  # an ordinary run folder per trial
        assert f"[{row['run']}]({row['run']})" in markdown
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    best = min(complete, key=lambda row: float(row["objective"]))  # the demo selects on the validation loss
    recipe = recipes.load(str(out / "best.yaml"))
    assert recipe.output_dir is None and not recipe.train.resume
    assert recipe.train.lr == float(best["train.lr"])
    assert recipe.train.weight_decay == float(best["train.weight_decay"])
    assert recipe.train.max_steps == 12 and recipe.data.max_tracks == 5  # the overrides too
    rerun = out.parent / "best-rerun"  # runnable as it is: only where to write is added
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["--recipe", str(out / "best.yaml"), f"output_dir={rerun}"]) == 0
    assert recipes.load(str(rerun / "recipe.yaml")).train.lr == float(best["train.lr"])
    assert (rerun / "metrics.json").is_file()
    assert (out / "history.png").stat().st_size > 0 and "history.png" in (out / "search.md").read_text()
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert f"best: trial {best['number']}, validation loss" in printed and str(out / "trials.md") in printed
    best_so_far = None
    for row in rows:  # one line as each trial ends, with the best so far
        if row["state"] == "COMPLETE":
            best_so_far = min([best_so_far or row, row], key=lambda r: float(r["objective"]))
            ended = f"trial {row['number']} complete in "
            assert re.search(
                rf"{ended}\d+ s: validation loss {float(row['objective']):.4f} \(best so far: trial "
                rf"{best_so_far['number']}, ",
                progress,
            )
        else:
            assert f"trial {row['number']} {row['state'].lower()} in " in progress
    assert "; 4 of 4 trials counted" in progress


def test_an_absurd_learning_rate_is_pruned_before_its_last_evaluation(pruned_search):
    out = pruned_search[0]
    pruned = [row for row in trials_of(out) if row["state"] == "PRUNED"]
    assert pruned and all(float(row["train.lr"]) == 1000.0 for row in pruned)
    for row in pruned:
        history = json.loads((out / row["run"] / "log_history.json").read_text())
        assert 0 < len([entry for entry in history if "eval_loss" in entry]) < EVALS
        assert (out / row["run"] / "metrics.json").is_file()  # the run still ended and wrote its folder


def wait_for(condition, process, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the search ended before the condition held"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def cli_process(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "finetune", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def lr_space(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    return space


def drawn(choices: list, trials: int, seed: int) -> list:
    """What the search's sampler draws for its first trials over one categorical key (TPE's first
    trials are random, whatever the scores)."""
    study = optuna.create_study(sampler=TrialSeededTPE(seed))
    values = []
    for _ in range(trials):
        trial = study.ask()
        values.append(trial.suggest_categorical("train.lr", choices))
        study.tell(trial, 0.0)
    return values


@pytest.mark.slow
def test_a_cross_validated_trial_trailing_the_median_runs_no_further_fold(synthetic_root, tmp_path):
    """An absurd learning rate drawn after a sane one completed stops after its first of 3 folds."""
    choices, trials = [1000.0, 0.002], 3
    lrs = drawn(choices, trials, seed=recipes.load("demo").seed)
    assert lrs[0] == 0.002 and 1000.0 in lrs, f"the test needs a sane first draw and an absurd one: {lrs}"
    space = tmp_path / "space.yaml"
    space.write_text(f"train.lr: {{choices: {choices}}}\n")
    out = tmp_path / "out"
    assert (
        main(
            search_command(
                synthetic_root, space, out, trials, "--folds", "3", "--prune-startup", "1", "train.max_steps=6"
            )
        )
        == 0
    )
    rows = trials_of(out)
    assert [float(row["train.lr"]) for row in rows] == lrs
    for row in rows:
        folds_run = len(list((out / row["run"]).glob("*/metrics.json")))
        summarised = (out / row["run"] / "summary.json").is_file()
        if float(row["train.lr"]) == 1000.0:
            assert (row["state"], folds_run, summarised) == ("PRUNED", 1, False)
        else:
            assert (row["state"], folds_run, summarised) == ("COMPLETE", 3, True)


@pytest.mark.slow
def test_confirm_cross_validates_the_best_and_the_recipes_settings_and_tests_the_difference(
    synthetic_root, tmp_path, lr_space
):
    out = tmp_path / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(search_command(synthetic_root, lr_space, out, 2, "--confirm", "3", "train.max_steps=2")) == 0
    result = json.loads((out / "confirm.json").read_text())
    best = min(trials_of(out), key=lambda row: float(row["objective"]))
    assert result["best_trial"] == int(best["number"]) and result["tracks"] > 0
    for arm, lr in (("confirm-best", float(best["train.lr"])), ("confirm-packaged", recipes.load("demo").train.lr)):
        runs = sorted((out / arm).glob("*/recipe.yaml"))
        assert len(runs) == 3 and all(recipes.load(str(run)).train.lr == lr for run in runs)  # each arm's own lr
    arms = result["arms"]  # both arms score the same pooled tracks: the paired difference is theirs
    assert result["difference"] == pytest.approx(arms["confirm-best"]["value"] - arms["confirm-packaged"]["value"])
    assert result["interval"][0] <= result["difference"] <= result["interval"][1]
    assert "confirm: pooled test accuracy over 3 folds" in printed.getvalue()
    assert "## Confirmation" in (out / "search.md").read_text()
    with contextlib.redirect_stdout(io.StringIO()):  # continued without --confirm: the report keeps it
        assert main(search_command(synthetic_root, lr_space, out, 2, "train.max_steps=2")) == 0
    assert "## Confirmation" in (out / "search.md").read_text()


@pytest.mark.slow
def test_a_killed_search_restarted_ends_with_the_asked_trials(synthetic_root, tmp_path, lr_space):
    out = tmp_path / "out"
    command = search_command(synthetic_root, lr_space, out, 4, "train.max_steps=2")
    first = cli_process(command)
    wait_for(lambda: len(list(out.glob("trial-*/metrics.json"))) >= 2, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    restarted = subprocess.run([sys.executable, "-m", "finetune", *command], capture_output=True, text=True)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    rows = trials_of(out)
    assert len([row for row in rows if row["state"] == "COMPLETE"]) == 4
    assert all(row["error"] == ABANDONED for row in rows if row["state"] != "COMPLETE")  # the killed one
    assert "search demo: " in restarted.stdout


@pytest.mark.slow
def test_two_processes_share_one_study_with_disjoint_trials(synthetic_root, tmp_path, lr_space):
    out, storage = tmp_path / "out", tmp_path / "shared" / "study.log"
    command = search_command(synthetic_root, lr_space, out, 3, "--storage", str(storage), "train.max_steps=2")
    processes = [cli_process(command) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stdout.read()[-3000:]
    rows = trials_of(out)
    assert len(rows) == 3 and all(row["state"] == "COMPLETE" for row in rows)  # 3 in all, each started under a lock
    assert sorted(p.name for p in out.glob("trial-*")) == sorted(row["run"] for row in rows)
    pids = {json.loads((out / row["run"] / "run.json").read_text())["pid"] for row in rows}
    assert pids == {process.pid for process in processes}  # both worked, each in its own trials' folders
    assert len({row["train.lr"] for row in rows}) == len(rows)  # started together, they drew different settings
    assert storage.is_file() and not (out / "journal.log").exists()


@pytest.mark.slow
def test_an_rdb_url_holds_the_study_and_the_search_continues_from_it(synthetic_root, tmp_path, lr_space):
    out, database = tmp_path / "out", tmp_path / "study.db"
    url = f"sqlite:///{database}"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(search_command(synthetic_root, lr_space, out, 1, "--storage", url, "train.max_steps=2")) == 0
        assert main(search_command(synthetic_root, lr_space, out, 2, "--storage", url, "train.max_steps=2")) == 0
    study = optuna.load_study(study_name=out.name, storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert len(trials_of(out)) == 2 and not (out / "journal.log").exists()


def test_a_trial_running_in_another_process_counts_towards_the_trials_to_start():
    study = optuna.create_study()
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    running = study.ask()  # another process's
    assert to_start(study, 4) == (1, "2 of 4 trials counted, 1 running in other processes")
    assert to_start(study, 3)[0] == 0  # the last one is running: start none
    study.tell(running, state=optuna.trial.TrialState.FAIL)  # died: abandoned, not counted
    assert to_start(study, 3) == (1, "2 of 3 trials counted")


def test_workers_started_together_draw_different_settings_and_a_fresh_search_repeats():
    """Two processes opening one study at once (here: two Study objects on one storage, each asking
    before the other's trial ends) draw different settings; the same search again draws the same."""

    def first_draws(seed):
        storage = optuna.storages.InMemoryStorage()
        workers = [
            optuna.load_study(study_name=name, storage=storage, sampler=TrialSeededTPE(seed))
            for name in [optuna.create_study(storage=storage).study_name] * 2
        ]
        trials = [worker.ask() for worker in workers]
        return [trial.suggest_float("lr", 1e-5, 1e-2, log=True) for trial in trials]

    draws = first_draws(0)
    assert draws[0] != draws[1]
    assert first_draws(0) == draws and first_draws(1) != draws


@pytest.mark.parametrize(
    "space, refusal",
    [
        ("train.lrr: {low: 0.001, high: 0.01}", "unknown key train.lrr"),
        ("train.lr: {low: -1.0, high: 0.01}", "out of range"),
        ("model.args.n_melz: {choices: [32, 64]}", "model.args.n_melz"),
        ("train.lr: {low: 0.01, high: 0.001}", "must be below high"),
        ("train.lr: {low: 0.0, high: 0.01, log: true}", "needs low > 0"),
        ("model.name: {choices: []}", "non-empty list"),
        ("train.lr: {low: 0.001, high: 0.01, scale: log}", "unknown field 'scale'"),
        ("output_dir: {choices: [a, b]}", "the search sets output_dir"),
    ],
)
def test_a_bad_space_is_refused_before_any_trial(tmp_path, capsys, space, refusal):
    (tmp_path / "space.yaml").write_text(space + "\n")
    code = main(search_command(tmp_path, tmp_path / "space.yaml", tmp_path / "out", 2))
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and refusal in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, refusal",
    [
        (["--timeout", "-3"], "--timeout: -3: give a number of seconds above 0"),  # once ran no trial, then exit 1
        (["--timeout", "nan"], "--timeout: nan: give a number of seconds above 0"),
        (["--trials", "0"], "--trials: 0: give at least 1"),
        (["--confirm", "1"], "--confirm: 1 folds: give at least 3"),
    ],
)
def test_a_bad_option_is_refused_before_any_folder(tmp_path, lr_space, capsys, option, refusal):
    with pytest.raises(SystemExit) as exited:
        main(search_command(tmp_path, lr_space, tmp_path / "out", 2, *option))
    assert exited.value.code == 2 and refusal in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fold_keys_are_refused_in_a_cross_validated_space(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("data.fold: {choices: [0, 1]}\n")
    code = main(search_command(tmp_path, tmp_path / "space.yaml", tmp_path / "out", 2, "--folds", "3"))
    assert code == 2 and "the search sets output_dir, seed" in capsys.readouterr().err


def test_a_failing_trial_is_recorded_with_its_error_and_the_search_goes_on(tmp_path, capsys):
    space = tmp_path / "space.yaml"  # each value passes alone; together the recipe refuses them, in the trial
    space.write_text("train.eval_steps: {choices: [3]}\ntrain.save_steps: {choices: [4]}\n")
    assert main(search_command(tmp_path, space, tmp_path / "out", 2)) == 1  # nothing found: not a success
    rows = trials_of(tmp_path / "out")
    assert [row["state"] for row in rows] == ["FAIL", "FAIL"]
    assert all("save_steps: 4 must be a multiple of train.eval_steps" in row["error"] for row in rows)
    printed = capsys.readouterr()
    assert "no trial completed" in printed.out and not (tmp_path / "out" / "best.yaml").exists()
    assert (
        printed.err.strip().splitlines()[-1] == "error: search: no trial completed; each trial's error is in trials.md"
    )
    assert "Traceback" not in printed.err  # a failed trial is one line, its error in trials.md
