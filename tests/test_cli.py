"""The command line: help, listings, dry runs, clear errors, and a short real run of the demo."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from cli_helpers import in_process_error, run_cli
from finetune import cli, recipe as recipes
from finetune.cli import main


def test_help_explains_commands_and_keys():
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("--recipe", "--dry-run", "recipes", "train.lr", "data.root", "backbone.mode"):
        assert text in result.stdout


def listed_commands(help_text: str) -> tuple[list[str], list[str]]:
    """The commands of `--help`: those of its usage lines, those of its `commands:` section."""
    usage = help_text.split("\n\n")[0].removeprefix("usage: ").splitlines()
    used = [line.split()[3] for line in usage]
    section = help_text.split("commands:\n")[1].split("\n\n")[0]
    return used, [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2] != " "]


def test_help_lists_exactly_the_tables_commands():
    used, listed = listed_commands(run_cli("--help").stdout)
    assert used == ["--recipe", *(name for name in cli.COMMANDS if name != cli.DEFAULT)]  # the default: no name
    assert listed == list(cli.COMMANDS)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit:
        main([name, "--help"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {cli.PROG}")


def greet_parser():
    """A throwaway command's parser: one option."""
    parser = cli.command_parser("greet", "Say hello.")
    parser.add_argument("--to", required=True)
    return parser


def greet(args):
    """A throwaway command's handler."""
    print(f"hello {args.to}")
    return 0


def test_a_command_added_to_the_table_is_listed_and_dispatched(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "greet", cli.Command("say hello to someone", greet_parser, greet))
    assert main(["greet", "--to", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert f"{cli.PROG} greet --to TO" in help_text and "  greet      say hello to someone" in help_text
    assert listed_commands(help_text)[1] == list(cli.COMMANDS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["recipes"],
        ["models"],
        ["--recipe", "demo", "--dry-run"],
        ["--recipe", "mert_mtat", "--dry-run", "data.root=/mtat"],
    ],
)
@pytest.mark.slow
def test_light_commands_import_no_heavy_library(argv):
    """Listing and checking read the registries as data: no torch, transformers or datasets."""
    code = (
        "import sys\nfrom finetune.cli import main\ntry:\n    status = main(%r)\nexcept SystemExit as end:\n"
        "    status = end.code\nprint(status, sorted(m for m in ('torch', 'transformers', 'datasets') "
        "if m in sys.modules), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code % argv], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip().splitlines()[-1] == "0 []"


def test_recipes_lists_each_packaged_recipe_with_a_line(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(recipes.packaged_recipes())
    assert any(line.startswith("demo ") and len(line.split()) > 3 for line in lines)


def test_dry_run_prints_the_resolved_recipe(capsys):
    assert main(["--recipe", "demo", "--dry-run", "train.lr=3e-4", "seed=3"]) == 0
    printed = recipes.from_dict(__import__("yaml").safe_load(capsys.readouterr().out))
    assert printed.train.lr == pytest.approx(3e-4) and printed.seed == 3
    assert printed.name == "demo"


def test_dry_run_accepts_a_yaml_path(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("# my recipe\ndata:\n  name: synthetic\ntrain:\n  epochs: 1\n")
    assert main(["--recipe", str(path), "--dry-run"]) == 0
    assert "name: mine" in capsys.readouterr().out


def test_bad_key_exits_non_zero_naming_key_and_choices(tmp_path):
    result = run_cli("--recipe", "demo", "train.sheduler=cosine", f"output_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "train.sheduler" in result.stderr and "scheduler" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing runs after a bad key"


@pytest.mark.slow
def test_demo_two_steps_writes_the_run_folder(demo_run):
    run_dir = demo_run
    for name in (
        "recipe.yaml",
        "metrics.json",
        "report.md",
        "report.html",
        "model/config.json",
        "model/model.safetensors",
        "model/preprocessor_config.json",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
            assert 0.0 <= metrics[split][key] <= 1.0
    assert metrics["test"]["num_tracks"] == 30
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4, "learning curves, confusion matrix, rare classes, durations"
    for study in ("rare_classes", "mistakes", "durations"):  # every run's report carries these studies
        assert (run_dir / "studies" / f"{study}.json").is_file(), study
    durations = json.loads((run_dir / "studies" / "durations.json").read_text())["data"]
    assert [row["duration"] for row in durations["rows"]] == [1.0, 3.0, 10.0], "the recipe's eval.durations"
    assert recipes.load(str(run_dir / "recipe.yaml")).train.max_steps == 2
    assert load_file(run_dir / "model" / "model.safetensors")


@pytest.mark.slow
def test_same_seed_same_weights(tmp_path, synthetic_root):
    """Two short runs with one seed train to identical weights (crops, shuffling, init)."""
    weights = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        assert (
            main(
                [
                    "--recipe",
                    "demo",
                    "train.max_steps=3",
                    "train.batch_size=4",
                    "seed=5",
                    "data.max_tracks=10",
                    f"data.root={synthetic_root}",
                    f"output_dir={run_dir}",
                    "data.num_workers=0",
                ]
            )
            == 0
        )
        weights.append(load_file(run_dir / "model" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert (weights[0][key] == weights[1][key]).all(), key


def test_models_lists_every_model_with_its_args(capsys):
    from finetune.models import model_builders

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in model_builders():
        assert f"\n{name} " in "\n" + out
    assert "model.args: " in out and "n_mels" in out


def test_mistakes_get_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "not_gtzan").mkdir()
    (tmp_path / "not_gtzan" / "notes.txt").write_text("hello")
    assert "does not exist" in in_process_error(capsys, "--recipe", "cnn_gtzan", f"data.root={tmp_path / 'nope'}")
    assert "no genre folders" in in_process_error(
        capsys, "--recipe", "cnn_gtzan", f"data.root={tmp_path / 'not_gtzan'}"
    )
    assert "is a file" in in_process_error(
        capsys, "--recipe", "cnn_gtzan", f"data.root={tmp_path / 'not_gtzan' / 'notes.txt'}"
    )
    (tmp_path / "mtat").mkdir()
    (tmp_path / "mtat" / "annotations_final.csv").write_text("not,a,tab,separated,header\n")
    (tmp_path / "mtat" / "0").mkdir()
    assert "annotations_final.csv" in in_process_error(capsys, "--recipe", "fcn_mtat", f"data.root={tmp_path / 'mtat'}")
    assert "runs/nope" in in_process_error(capsys, "predict", "--model", "runs/nope", "song.wav")
    assert "not a run folder" in in_process_error(capsys, "evaluate", str(tmp_path))
    assert "did you mean train.max_steps" in in_process_error(capsys, "--recipe", "demo", "train.max_step=3")
    assert "train.batch_size" in in_process_error(capsys, "--recipe", "demo", "--dry-run", "train.batch_size=0")


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--recipe", "cnn_gtzan", f"data.root={tmp_path / 'nope'}", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "FileNotFoundError" in result.stderr
    plain = run_cli("--recipe", "cnn_gtzan", f"data.root={tmp_path / 'nope'}")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr


@pytest.mark.slow
def test_a_run_reports_progress_lines_and_ends_with_its_results(tmp_path, synthetic_root, capsys):
    """Without a terminal (as under pytest, CI or nohup): plain log lines, no progress bars or raw
    log dictionaries; the run ends with the validation and test results, their intervals, the report."""
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=4",
                "train.batch_size=4",
                "train.eval_steps=2",
                "train.logging_steps=2",
                "data.max_tracks=8",
                "eval.durations=null",
                "data.num_workers=0",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "\r" not in err and "{'loss'" not in out + err and "it/s" not in err
    assert "step 2/4: loss" in err and "step 2: validation loss" in err and "step 4: validation loss" in err
    summary = out.strip().splitlines()
    assert summary[0] == f"demo: {run_dir}"
    assert summary[1].split()[0] == "validation" and "loss" in summary[1] and "95% CI" in summary[1]
    assert summary[2].split()[0] == "test" and "accuracy" in summary[2] and "8 tracks" in summary[2]
    assert summary[3].startswith("  artists: unknown for these tracks")  # the demo's tracks name no artist
    assert summary[4] == f"  report: {run_dir / 'report.html'}"
    assert out.count(str(run_dir)) == 2  # the folder is named once, then the report


@pytest.mark.slow
def test_evaluate_prints_each_study_table(demo_run, capsys):
    assert main(["evaluate", str(demo_run), "--durations", "1,3", "--explain", "0"]) == 0
    out = capsys.readouterr().out
    for title in ("Rare classes", "Most confidently wrong test tracks", "Input duration"):
        assert title in out, out
    assert "| 1 (mean kept" in out and "| whole track |" in out  # the duration table's rows
    assert f"report: {demo_run}/report.html" in out
