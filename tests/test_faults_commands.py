"""Commands that ended right but read wrong (issue 27): `search` and `compare --vary` into a folder that
holds another command's results, a search storage that cannot be opened, a search stopped by its
--timeout, trials.md's links, `compare --vary` without --recipe, `evaluate` on a run still training,
and a warning said once per run planned."""

import importlib.util
import os
import re
import shutil
import socket

import pytest

from data_fixtures import write_audio
from finetune import recipe as recipes
from finetune.cli import main
from finetune.folders import RESULTS, OtherResults, check_output_folder
from finetune.rundir import claim
from test_refusals import folder_dataset, refusal
from test_search import search_command, trials_of

REFUSED_TRIALS = "train.eval_steps: {choices: [3]}\ntrain.save_steps: {choices: [4]}\n"  # refused in each trial


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def finished_run(demo_run, tmp_path):
    """A copy of a finished training run (run.json, metrics.json, report.html ...)."""
    return shutil.copytree(demo_run, tmp_path / "run")


# ---------------------------------------------------------------------------- another command's folder


@pytest.mark.parametrize("held", list(RESULTS))
def test_a_folder_is_refused_by_every_command_but_the_one_whose_results_it_holds(tmp_path, held):
    folder = tmp_path / held
    folder.mkdir()
    (folder / RESULTS[held][1][0]).touch()  # run.json, summary.json, vary.json, journal.log
    check_output_folder(folder, held)  # its own: continued
    check_output_folder(tmp_path / "new", held)
    for command in RESULTS.keys() - {held}:
        with pytest.raises(OtherResults, match=f"--out {re.escape(str(folder))} holds {re.escape(RESULTS[held][0])}"):
            check_output_folder(folder, command)


def test_search_refuses_a_finished_runs_folder_and_writes_nothing_into_it(finished_run, capsys):
    before, report = listing(finished_run), (finished_run / "report.html").read_bytes()
    (finished_run.parent / "space.yaml").write_text("train.lr: {low: 0.001, high: 0.01}\n")
    code = main(search_command(finished_run.parent, finished_run.parent / "space.yaml", finished_run, 1))
    assert code == 2 and error_lines(capsys.readouterr().err) == [
        f"error: --out {finished_run} holds a training run (run.json); a search needs a new or empty folder, or "
        "its own to continue it: choose another --out"
    ]
    assert listing(finished_run) == before and (finished_run / "report.html").read_bytes() == report


@pytest.mark.parametrize(
    "command, theirs",
    [
        (["compare", "--recipe", "demo", "--vary", "train.lr=1e-3,2e-3"], "a comparison of values (compare --vary)"),
        (["cv", "--recipe", "demo", "--folds", "3"], "a cross-validation"),
    ],
    ids=["compare-vary", "cv"],
)
def test_compare_vary_and_cv_refuse_a_finished_runs_folder_and_write_nothing_into_it(
    finished_run, capsys, command, theirs
):
    before = listing(finished_run)
    code = main([*command, "--out", str(finished_run)])
    assert code == 2 and error_lines(capsys.readouterr().err) == [
        f"error: --out {finished_run} holds a training run (run.json); {theirs} needs a new or empty folder, or "
        "its own to continue it: choose another --out"
    ]
    assert listing(finished_run) == before


# ---------------------------------------------------------------------------- search storage, timeout, links


def postgresql_without_driver() -> str:
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here: the URL would be tried on the network")
    return "postgresql://u:secret@h/db"


@pytest.mark.parametrize(
    "storage, problem",
    [
        (
            postgresql_without_driver,
            "--storage postgresql://u:***@h/db: its database driver (psycopg) is not "
            "installed; install it, or give a journal file instead",
        ),
        (
            lambda: "sqlite:////nonexistent/dir/x.db",
            "--storage sqlite:////nonexistent/dir/x.db: cannot be opened "
            "(unable to open database file); a sqlite file needs a folder that exists and can be written",
        ),
    ],
)
@pytest.mark.parametrize("users_empty_folder", [False, True])
def test_a_storage_that_cannot_be_opened_is_one_line_and_leaves_no_folder(
    tmp_path, capsys, storage, problem, users_empty_folder
):
    url, out, space = storage(), tmp_path / "out", tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.001, high: 0.01}\n")
    if users_empty_folder:
        out.mkdir()
    assert main(search_command(tmp_path, space, out, 1, "--storage", url)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(error_lines(err)) == 1 and problem in error_lines(err)[0]
    assert "secret" not in err, "the password is not shown"
    assert listing(out) == [] if users_empty_folder else not out.exists()


def test_a_search_stopped_by_its_timeout_says_so(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(REFUSED_TRIALS)  # each trial fails at once
    code = main(search_command(tmp_path, tmp_path / "space.yaml", tmp_path / "out", 100000, "--timeout", "1"))
    err = capsys.readouterr().err
    stopped = [line for line in err.splitlines() if line.startswith("search stopped")]
    assert code == 1 and len(stopped) == 1, err[-2000:]
    counted = len(trials_of(tmp_path / "out"))
    assert stopped[0] == (
        f"search stopped after --timeout 1 s with {counted} of 100000 trials counted; the same command continues it"
    )


def test_trials_md_links_only_run_folders_that_exist(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(REFUSED_TRIALS)  # refused before a run folder is made
    assert main(search_command(tmp_path, tmp_path / "space.yaml", tmp_path / "out", 2)) == 1
    assert not list((tmp_path / "out").glob("trial-*"))
    table = (tmp_path / "out" / "trials.md").read_text()
    assert "](trial-" not in table and all(row["run"] == "" for row in trials_of(tmp_path / "out"))
    assert re.search(r"\| FAIL \|.*\| - \| RecipeError", table), table


# ---------------------------------------------------------------------------- compare --vary, evaluate


def test_compare_vary_without_recipe_asks_for_it(capsys):
    assert main(["compare", "--vary", "train.lr=1e-3,3e-3"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: compare: --recipe needed too: to run a recipe for each value of one setting, give --recipe with "
        "--vary KEY=V1,V2,... (--folds and --seeds optional)"
    ]


@pytest.mark.slow
def test_evaluate_a_run_still_training_names_the_process_using_it(tmp_path):
    training = recipes.load("demo", [f"output_dir={tmp_path / 'run'}"])
    with claim(training) as run:  # a run that has started (run.json, recipe.yaml, lock held) and saved no model
        line = refusal(tmp_path, "evaluate", str(run.path))
    assert f"{run.path} is in use by another" in line and f"(pid {os.getpid()} on {socket.gethostname()}" in line


def test_compare_vary_says_the_dropped_dataset_options_once(tmp_path, capsys):
    """Every run planned loads the recipe: its data.name override drops the gtzan recipe's options, said
    once for the 6 runs (the refusal after planning ends the command before any trains)."""
    root = folder_dataset(tmp_path / "data", ["a", "b", "c"], 4)
    assert (
        main(
            [
                "compare",
                "--recipe",
                "cnn_gtzan",
                "--vary",
                "train.lr=1e-3,0.001",
                "--folds",
                "3",
                "data.name=folder",
                f"data.root={root}",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("data.name=folder: the recipe's options for gtzan left out: data.split_scheme=fault_filtered") == 1
    assert error_lines(err) == ["error: --vary train.lr: 1e-3 and 0.001 set the same value (0.001)"]


def test_cv_says_the_dropped_dataset_options_once(tmp_path, capsys):
    """cv loads the recipe for its name and once per fold: the dropped options are said once. Class `a`
    is one artist (an artist sub-folder), so the planned folds are refused before any run."""
    root = folder_dataset(tmp_path / "data", ["b", "c"], 4)
    for n in range(4):
        write_audio(root / "a" / "one-artist" / f"{n}.wav", seconds=1.0, sample_rate=16000, seed=n)
    assert (
        main(
            [
                "cv",
                "--recipe",
                "cnn_gtzan",
                "--folds",
                "3",
                "data.name=folder",
                f"data.root={root}",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("data.name=folder: the recipe's options for gtzan left out: data.split_scheme=fault_filtered") == 1
    assert len(error_lines(err)) == 1 and "class(es) a would be tested" in error_lines(err)[0]
