"""Command line: one table (`COMMANDS`) gives each command its help line, parser and handler; the
usage, the `--help` command list and dispatch are read from it. The work happens in the modules the
handlers import, each only when its command runs: `--help` and `recipes` import no heavy library."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from finetune import console, recipe as recipes

PROG = "python -m finetune"

INTRO = """Fine-tune pretrained audio models (AST, MERT, wav2vec2/HuBERT) and train from-scratch
baselines for music genre classification and tagging, all through one transformers Trainer.

A run writes its own folder (runs/<recipe>-<timestamp>, or output_dir=...), locked while it runs,
holding run.json, recipe.yaml, metrics.json, report.md, report.html, checkpoints and model/
(safetensors + config); train.resume=true continues it with the same settings."""

EXAMPLES = """examples:
  python -m finetune --recipe demo
  python -m finetune --recipe cnn_gtzan data.root=/data/gtzan train.lr=3e-4
  python -m finetune --recipe my_recipe.yaml --dry-run
  python -m finetune evaluate runs/cnn_gtzan-X --durations 1,3,5,10,30
  python -m finetune evaluate runs/cnn_gtzan-X --on fma data.root=/data/fma

A mistake (a recipe key, a data or model folder) prints one line `error: ...` and exits with
status 2; add --debug (or set FINETUNE_DEBUG=1) for the traceback. Progress bars show on a
terminal; elsewhere (CI logs, nohup) progress is logged as plain lines.
"""


def command_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of `python -m finetune <command>`."""
    return argparse.ArgumentParser(prog=f"{PROG} {command}", description=description)


def synopsis(parser: argparse.ArgumentParser) -> str:
    """A parser's usage on one line, without `[-h]`."""
    return " ".join(parser.format_usage().split()[1:]).replace(" [-h]", "")


def usage(default_line: str) -> str:
    """The default command's usage line, then one line per other command of the table."""
    others = [synopsis(command.parser()) for name, command in COMMANDS.items() if name != DEFAULT]
    return "\n       ".join([default_line, *others])


def command_list() -> str:
    """The `commands:` section of `--help`: each command's help line, wrapped."""
    lines = [
        textwrap.fill(command.help, width=105, initial_indent=f"  {name:<10} ", subsequent_indent=" " * 13)
        for name, command in COMMANDS.items()
    ]
    return "commands:\n" + "\n".join(lines)


def train_parser() -> argparse.ArgumentParser:
    """`python -m finetune [train] --recipe ...`, the default command: its --help is the toolkit's
    (every command's usage and help line, then every recipe key)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe keys (override with key=value; lists as a,b,c; null for none):\n" + recipes.describe_schema(),
    )
    parser.add_argument(
        "--recipe",
        required=True,
        metavar="NAME_OR_YAML",
        help="a packaged recipe name (see `recipes`) or a path to a YAML file",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the resolved recipe, then exit without running"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=3e-4 data.root=/data/gtzan"
    )
    parser.usage = usage(synopsis(parser))
    parser.description = f"{INTRO}\n\n{command_list()}\n\n{EXAMPLES}"
    return parser


def list_recipes(args: argparse.Namespace) -> int:
    """Each packaged recipe with its first comment line."""
    for name, path in recipes.packaged_recipes().items():
        print(f"{name:<28} {recipes.first_line_comment(path)}")
    return 0


def list_models(args: argparse.Namespace) -> int:
    """Each model name with its builder's first doc line and the model.args it takes."""
    from finetune.bundle import TOOLKIT_ARGS
    from finetune.model_options import MODEL_OPTIONS

    for name, options in sorted(MODEL_OPTIONS.items()):
        accepted = [p for p in options.parameters if p not in TOOLKIT_ARGS]
        print(f"{name:<12} {options.summary}")
        print(f"{'':<12} model.args: {', '.join(accepted) or '(none)'}")
    list_encoders()
    return 0


def list_encoders() -> None:
    """The encoders the toolkit packages and installed packages register (model.name=encoder
    backbone.encoder=<name>); any package.module:factory or hear:package.module works too."""
    from finetune.encoder_specs import ENTRY_POINT_GROUP, registered_encoders

    encoders = registered_encoders()
    print(f"\nplug-in encoders (model.name=encoder backbone.encoder=<name>; entry points {ENTRY_POINT_GROUP}):")
    for name, spec in sorted(encoders.items()):
        print(f"{name:<12} {spec}")
    print(f"{'':<12} or any package.module:factory, or hear:package.module")


def train(args: argparse.Namespace) -> int:
    """Check the recipe, then (unless --dry-run) run it and print its summary."""
    from finetune.checks import check_recipe

    recipe = recipes.load(args.recipe, args.overrides)
    if recipe.train.precision != "fp32":  # fp32 trains anywhere; a mixed precision asks the device (torch)
        from finetune.training import runnable_precision

        recipe = runnable_precision(recipe)  # as it will run on this machine
    check_recipe(recipe)
    if args.dry_run:
        print(recipe.to_yaml(), end="")
        return 0
    from finetune.run import RunIncomplete, run

    try:
        run_dir, failure = run(recipe), None
    except RunIncomplete as err:  # the results are saved: show them, then the failure
        run_dir, failure = err.run_dir, err
    if int(os.environ.get("RANK", "0")) == 0:  # under a launcher, the main process reports
        from finetune.report import run_summary

        print(run_summary(run_dir, recipe, json.loads((run_dir / "metrics.json").read_text())))
    if failure is not None:
        print(f"error: {error_line(failure)}", file=sys.stderr)
        return 1
    return 0


def whole_number(text: str, least: int, unit: str = "", why: str = "") -> int:
    """`text` as a whole number of at least `least`, or an argparse error saying so (`unit`: what is
    counted, e.g. " folds"; `why`: the reason for the least)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{' of' + unit if unit else ''}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value}{unit}: give at least {least}{why}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return whole_number(text, 1)


def predict_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "predict",
        "Score audio files of any length (read in windows, averaged per file). "
        "Prints one JSON line per file: file, duration, labels [{label, score}], "
        "and with --per-window the window timeline; audio far shorter than the model's window is "
        "warned about, and its line holds the warning. Which labels: genres (single-label): the "
        "--top-k best (default 5). Tagging, in order of precedence: --threshold X prints every tag "
        "scoring >= X; otherwise every tag scoring >= its own threshold (tuned per tag for F1 on "
        "the validation split at the end of the run, stored as config.tag_thresholds; 0.5 for a "
        "tag with no validation positives); a model saved without tuned thresholds prints the top "
        "5. With either threshold, --top-k K then keeps only the best K of the tags that pass "
        "(--threshold 0 --top-k K: plain top K). Labels are sorted by score; a tagging result can "
        "be empty.",
    )
    parser.add_argument("--model", required=True, metavar="RUN_OR_MODEL_DIR", help="a run folder or a model folder")
    parser.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=None,
        help="genres: labels to print (default 5); tagging: at most this many of "
        "the tags at/above their threshold (default: all of them)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="tagging: one threshold for every tag, overriding the tuned per-tag thresholds; ignored for genres",
    )
    parser.add_argument("--per-window", action="store_true", help="add each window's scores")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows scored per batch")
    return parser


def predict(args: argparse.Namespace) -> int:
    from finetune.predict import Predictor, audio_files

    files = audio_files(args.inputs)  # before loading the model: inputs without audio are refused at once
    predictor = Predictor.from_pretrained(args.model, batch_size=args.batch_size)
    failed = 0
    for result in predictor.predict_many(files, top_k=args.top_k, threshold=args.threshold, per_window=args.per_window):
        failed += "error" in result
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


def export_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "export",
        "Write a Hub-ready folder from a run: safetensors weights, config.json with "
        "id2label, preprocessor_config.json, recipe.yaml and a model card README.md; "
        "optionally upload it (token from HF_TOKEN or `hf auth login`).",
    )
    parser.add_argument("run", help="a run folder")
    parser.add_argument(
        "--to",
        required=True,
        metavar="DIR",
        help="folder to write: new, empty or an earlier export of the same run (replaced whole)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the --to folder whatever it holds (deleting its content)"
    )
    parser.add_argument("--push-to-hub", metavar="USER/NAME", help="upload the folder to this repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument(
        "--adapter-only",
        action="store_true",
        help="LoRA runs: export the adapters and head alone (load with PeftModel, or "
        "finetune.backbones.lora.load_adapter for backbone.layer=weighted runs)",
    )
    return parser


def export(args: argparse.Namespace) -> int:
    from finetune.export import HubError, check_push, export_run, push_to_hub

    if args.push_to_hub:  # before anything is written
        check_push(args.push_to_hub, "--push-to-hub", "export without --push-to-hub and upload the folder later")
    folder = export_run(args.run, args.to, adapter_only=args.adapter_only, overwrite=args.overwrite)
    print(f"exported: {folder}")
    if args.push_to_hub:
        try:
            print(f"pushed: {push_to_hub(folder, args.push_to_hub, args.private)}")
        except HubError as err:
            print(f"error: {error_line(err)}", file=sys.stderr)
            return 1
    return 0


def seconds_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seconds") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive seconds, e.g. 1,3,5,10,30")
    return values


def evaluate_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "evaluate",
        "Studies of a trained run, each saved under RUN/studies/ and added to its report: "
        "test predictions (RUN/predictions/test.npz, for bootstrap intervals), rare classes, the most "
        "confidently wrong tracks with saliency maps; --durations adds the input-length study; --on "
        "scores the run on another dataset through a genre mapping instead (finetune/studies/genre_maps.py).",
    )
    parser.add_argument("run", help="a run folder")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="data.key=value",
        help="with --on: the other dataset's settings, e.g. data.root=/data/fma",
    )
    parser.add_argument(
        "--durations",
        type=seconds_list,
        metavar="S,S,...",
        help="input lengths in seconds, each scored from the start and from a random offset",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random offsets (default 0)")
    parser.add_argument("--on", metavar="DATASET", help="score on another dataset: gtzan, fma or mtat")
    parser.add_argument(
        "--mapping",
        metavar="FILE.yaml",
        help="with --on: a YAML genre mapping `model label: dataset label` (null: none) instead of the packaged one",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("train", "validation", "test"),
        help="with --on: the split to score (default test)",
    )
    parser.add_argument(
        "--explain",
        type=int,
        default=3,
        metavar="N",
        help="saliency maps for the N most confidently wrong tracks (default 3; 0: none)",
    )
    parser.add_argument("--batch-size", type=positive_int, help="windows scored per batch (default: the recipe's)")
    return parser


def evaluate(args: argparse.Namespace) -> int:
    from finetune.report import console_text
    from finetune.studies import evaluate as run_studies

    sections = run_studies(
        args.run,
        durations=args.durations,
        on=args.on,
        overrides=args.overrides,
        mapping_file=args.mapping,
        split=args.split,
        explain=args.explain,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    print(console_text(sections))
    print(f"report: {args.run}/report.html")
    return 0


def explain_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "explain",
        "Occlusion saliency of an audio file for the predicted (or given) label: bands of "
        "the log-mel plane times short segments are removed in the STFT, the audio is re-synthesised "
        "and re-scored; the drop in probability is drawn under the log-mel spectrogram (PNG).",
    )
    parser.add_argument("run", help="a run folder")
    parser.add_argument("file", help="an audio file")
    parser.add_argument("--out", help="PNG to write (default RUN/explanations/<file stem>.png)")
    parser.add_argument("--label", help="explain this label instead of the predicted one")
    parser.add_argument("--start", type=float, default=0.0, help="excerpt start in seconds (default 0)")
    parser.add_argument("--duration", type=float, default=30.0, help="excerpt length in seconds (default 30)")
    parser.add_argument("--bands", type=int, default=16, help="mel bands occluded one at a time (default 16)")
    parser.add_argument("--segment-seconds", type=float, default=0.5, help="occluded segment length (default 0.5)")
    return parser


def explain(args: argparse.Namespace) -> int:
    from finetune.explain import explain_file

    out, saliency = explain_file(
        args.run, args.file, args.out, args.start, args.duration, args.label, args.bands, args.segment_seconds
    )
    print(
        json.dumps({"file": args.file, "label": saliency.label, "score": round(saliency.score, 5), "image": str(out)})
    )
    return 0


def compare_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "compare",
        "One table (compare.md) and one plot (compare.png) of the test scores of several "
        "runs, with bootstrap intervals; refuses runs tested on different datasets or splits. "
        "With --recipe and --vary KEY=V1,V2,...: which value of one setting is best. The recipe runs "
        "for each value over the same folds and seeds (OUT/KEY=VALUE/fold{i}-seed{s}, a cross-validation "
        "per value, every recipe checked first); OUT/vary.md, vary.json and vary.png: per value the "
        "mean ± std over the runs, the pooled score with its bootstrap interval, a paired test against "
        "the first value, parameters, training seconds and scoring speed. The same command again "
        "continues: finished runs are kept, stopped ones resumed.",
    )
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN | key=value",
        help="run folders to compare; with --recipe: dotted overrides for every run",
    )
    parser.add_argument("--recipe", metavar="NAME_OR_YAML", help="a recipe to run for every --vary value")
    parser.add_argument(
        "--vary",
        metavar="KEY=V1,V2,...",
        help="the setting to vary and its values (at least 2), e.g. train.lr=1e-4,3e-4,1e-3 "
        "or model.args.frontend=mel,stft,cqt",
    )
    parser.add_argument(
        "--folds",
        type=fold_count,
        metavar="K",
        help="with --vary: number of folds, at least 3 (default: the dataset's own split)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        metavar="S,S,...",
        help="with --vary: comma-separated seeds, each run on every fold (default 0)",
    )
    parser.add_argument(
        "--out",
        help="folder to write (default <first run's parent>/compare-<timestamp>; "
        "with --vary runs/<recipe>-vary-<KEY>, so the same command resumes)",
    )
    add_jobs(parser, "with --vary: ")
    return parser


def add_jobs(parser: argparse.ArgumentParser, when: str = "") -> None:
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"{when}worker processes sharing the runs (default 1), each with its share of the CPU "
        "threads and, on a GPU machine, one GPU; the same command on other machines with the same "
        "--out (a shared disk with working flock) joins in through the run folders' locks",
    )


def recipe_options(args: argparse.Namespace) -> list[str]:
    """--recipe, --folds and --seeds as given, for the command line of another worker."""
    folds = ["--folds", str(args.folds)] if args.folds else []
    return ["--recipe", args.recipe, *folds, "--seeds", ",".join(map(str, args.seeds or [0]))]


def run_workers(work: Callable[[], tuple[os.PathLike, str]], label: str, table: str) -> int:
    """Run `work` (a comparison, maybe with workers), print its table and `label: OUT/table`; a failed worker:
    exit 1."""
    from finetune.workers import WorkerFailed

    try:
        out, markdown = work()
    except WorkerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown, end="")
    print(f"{label}: {out / table}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Compare run folders, or (--recipe, --vary) run a recipe for each value of one setting."""
    varying = args.recipe or args.vary or args.folds or args.seeds or args.jobs != 1
    if not varying:
        from finetune.compare import compare as compare_runs

        out, markdown = compare_runs(args.runs, args.out)
        print(markdown, end="")
        print(f"written: {out}")
        return 0
    folders = [item for item in args.runs if "=" not in item]
    if folders:
        raise ValueError(
            "compare takes run folders, or --recipe with --vary KEY=V1,V2,... (and key=value "
            f"overrides), not both: {' '.join(folders)}"
        )
    missing = [option for option, value in (("--recipe", args.recipe), ("--vary", args.vary)) if not value]
    if missing:
        raise ValueError(
            f"compare: {' and '.join(missing)} needed too: to run a recipe for each value of one "
            "setting, give --recipe with --vary KEY=V1,V2,... (--folds and --seeds optional)"
        )
    from finetune.vary import vary

    command = ["compare", *recipe_options(args), "--vary", args.vary, *args.runs]
    return run_workers(
        lambda: vary(args.recipe, args.runs, args.vary, args.folds, args.seeds or [0], args.out, args.jobs, command),
        "written",
        "vary.md",
    )


def fold_count(text: str) -> int:
    """An argparse type: a number of folds, at least 3."""
    return whole_number(text, 3, " folds", " (one tests, the next validates, the rest train)")


def seed_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of seeds, e.g. 0,1,2") from None


def recipe_command_parser(name: str, description: str, overrides_help: str) -> argparse.ArgumentParser:
    """A command's parser that takes --recipe and dotted overrides."""
    parser = command_parser(name, description)
    parser.add_argument(
        "--recipe", required=True, metavar="NAME_OR_YAML", help="a packaged recipe name or a path to a YAML file"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    return parser


def cv_parser() -> argparse.ArgumentParser:
    parser = recipe_command_parser(
        "cv",
        "Run a recipe on every fold (the splits pooled into K label-stratified folds) and seed, "
        "one run folder each (OUT/fold{i}-seed{s}); OUT/summary.md and summary.json: per-run test scores, mean "
        "± sample std (ddof=1), each seed's test predictions pooled over the folds with a bootstrap interval.",
        "dotted overrides for every run, e.g. train.max_steps=200",
    )
    parser.add_argument(
        "--folds",
        type=fold_count,
        metavar="K",
        help="number of folds, at least 3 (default: no folds, the dataset's own split)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default="0",
        metavar="S,S,...",
        help="comma-separated seeds, each run on every fold (default 0)",
    )
    parser.add_argument("--out", help="folder to write (default runs/<recipe>-cv-<timestamp>)")
    add_jobs(parser)
    return parser


def cv(args: argparse.Namespace) -> int:
    from finetune.cv import cross_validate

    command = ["cv", *recipe_options(args), *args.overrides]
    return run_workers(
        lambda: cross_validate(
            args.recipe, args.overrides, args.folds, args.seeds, args.out, jobs=args.jobs, command=command
        ),
        "summary",
        "summary.md",
    )


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return whole_number(text, 0)


def positive_number(text: str, unit: str) -> float:
    """`text` as a finite number above 0, or an argparse error saying so (`unit`: what it counts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of {unit} above 0")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    return positive_number(text, "seconds")


def positive_megabytes(text: str) -> float:
    """An argparse type: a number of MB above 0."""
    return positive_number(text, "MB")


def search_parser() -> argparse.ArgumentParser:
    parser = recipe_command_parser(
        "search",
        "A resumable Optuna search (TPE, median pruning on the Trainer's evaluations) over any recipe keys, "
        "scored by the recipe's selection metric (train.metric; default the loss) on validation, or its mean "
        "over --folds. Each trial is a run folder OUT/trial-NNNN. OUT/trials.csv, trials.md, best.yaml (the "
        "best trial's recipe), history.png, importance.png, search.md, report.html. The same command again "
        "continues the study; processes given one --storage and --out share it.",
        "dotted overrides for every trial, e.g. data.root=/data/gtzan",
    )
    parser.add_argument(
        "--space",
        required=True,
        metavar="SPACE.yaml",
        help="dotted recipe keys to distributions: train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}, "
        "train.max_steps: {low: 50, high: 300, step: 50} (ints), model.name: {choices: [a, b]}",
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=20,
        metavar="N",
        help="trials in all, those already in the study included: complete, pruned or failed "
        "with an error (default 20)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="start no trial after this many seconds (the trial running then finishes)",
    )
    parser.add_argument(
        "--folds",
        type=fold_count,
        metavar="K",
        help="score each trial by its mean over K folds (a cross-validation each, pruned between folds "
        "on the mean so far)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL_OR_FILE",
        help="the study's storage: an RDB URL (sqlite:///x.db, postgresql://...) or a journal "
        "file on shared storage (default OUT/journal.log)",
    )
    parser.add_argument("--out", help="search folder (default runs/<recipe>-search-<timestamp>; give it to resume)")
    parser.add_argument(
        "--confirm",
        type=fold_count,
        metavar="K",
        help="then run the best settings and the recipe's own over K folds (OUT/confirm-best, "
        "OUT/confirm-packaged) and compare their pooled test predictions by a paired test "
        "(OUT/confirm.json; the same command without --confirm keeps it in the report)",
    )
    parser.add_argument(
        "--prune-startup",
        type=non_negative_int,
        metavar="N",
        help="trials that complete before any is pruned (default 5)",
    )
    parser.add_argument(
        "--prune-warmup",
        type=non_negative_int,
        metavar="STEPS",
        help="optimizer steps before a trial's evaluations are compared (with --folds: folds; default 0)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes sharing the study (default 1), each with its share of the CPU threads "
        "and, on a GPU machine, one GPU; together they run --trials trials in all",
    )
    return parser


def search_options(args: argparse.Namespace) -> list[str]:
    """The options as given that another worker of this search takes (not --out, --jobs, or --confirm:
    this process confirms once the workers have ended)."""
    given = (
        ("--timeout", args.timeout),
        ("--folds", args.folds),
        ("--storage", args.storage),
        ("--prune-startup", args.prune_startup),
        ("--prune-warmup", args.prune_warmup),
    )
    return [text for option, value in given if value is not None for text in (option, str(value))]


def search(args: argparse.Namespace) -> int:
    from finetune.search import search as run_search
    from finetune.search.results import NO_TRIAL_COMPLETED
    from finetune.workers import WorkerFailed

    pruning = {
        key: value
        for key, value in (("prune_startup", args.prune_startup), ("prune_warmup", args.prune_warmup))
        if value is not None
    }
    command = [
        "search",
        "--recipe",
        args.recipe,
        "--space",
        args.space,
        "--trials",
        str(args.trials),
        *search_options(args),
        *args.overrides,
    ]
    try:
        _, summary = run_search(
            args.recipe,
            args.space,
            args.overrides,
            args.trials,
            args.timeout,
            args.folds,
            args.storage,
            args.out,
            args.confirm,
            **pruning,
            jobs=args.jobs,
            command=command,
        )
    except WorkerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not summary:  # a helper worker of --jobs: worker 1 prints the summary
        return 0
    print(summary)
    if NO_TRIAL_COMPLETED in summary:  # every trial failed or was pruned: the search found nothing
        print(f"error: search: {NO_TRIAL_COMPLETED}; each trial's error is in trials.md", file=sys.stderr)
        return 1
    return 0


def pack_parser() -> argparse.ArgumentParser:
    parser = recipe_command_parser(
        "pack",
        "Write a recipe's dataset as Parquet shards (audio as FLAC at the model's sample rate, labels, ids, "
        "durations) with a dataset card, for training with data.name=hub data.path=DEST (streamed, each "
        "process reading its own shards).",
        "dotted recipe overrides, e.g. data.root=/data/gtzan",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="DEST",
        help="a new folder, an fsspec URL (s3://bucket/x, gs://..., file:///...) or a Hub "
        "dataset repo (hf://datasets/user/name)",
    )
    parser.add_argument(
        "--shard-mb", type=positive_megabytes, default=256.0, help="audio per Parquet shard, MB (default 256)"
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        help="rate to store the audio at (default: the recipe's model's, found by building it)",
    )
    return parser


def pack(args: argparse.Namespace) -> int:
    from finetune.pack import pack as pack_dataset

    recipe = recipes.load(args.recipe, args.overrides)
    print(f"packed: {pack_dataset(recipe, args.to, args.shard_mb, args.sample_rate)}")
    return 0


@dataclass(frozen=True)
class Command:
    """A command of `python -m finetune`: its line in `--help`, its parser's builder, its handler."""

    help: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


def no_options(name: str, help: str) -> Callable[[], argparse.ArgumentParser]:
    """The parser builder of a command that takes no options."""
    return lambda: command_parser(name, help)


DEFAULT = "train"  # `python -m finetune --recipe X` is `python -m finetune train --recipe X`
COMMANDS = {
    "train": Command(
        "train and evaluate a recipe (the default command): python -m finetune --recipe demo", train_parser, train
    ),
    "recipes": Command("list the packaged recipes", no_options("recipes", "List the packaged recipes."), list_recipes),
    "models": Command(
        "list the model names a recipe can use (model.name=...)",
        no_options("models", "List the model names a recipe can use and their model.args."),
        list_models,
    ),
    "predict": Command(
        "score audio files of any length with a trained model (JSON line per file)", predict_parser, predict
    ),
    "export": Command(
        "write a Hub-ready folder (weights, config, model card) and optionally push it", export_parser, export
    ),
    "evaluate": Command(
        "studies of a trained run added to its report: rare classes, most confidently wrong "
        "tracks with saliency maps, input duration (--durations), another dataset (--on)",
        evaluate_parser,
        evaluate,
    ),
    "explain": Command(
        "occlusion saliency map of a file over the log-mel plane, saved as PNG", explain_parser, explain
    ),
    "compare": Command(
        "one table and plot across runs tested on the same split, paired tests against the first; "
        "--recipe R --vary KEY=V1,V2,...: run and compare each value of one setting",
        compare_parser,
        compare,
    ),
    "cv": Command(
        "a recipe on every cross-validation fold and seed: per-run table, mean ± std, pooled scores", cv_parser, cv
    ),
    "search": Command(
        "a resumable Optuna search over any recipe keys: trials table, best recipe, plots, report",
        search_parser,
        search,
    ),
    "pack": Command(
        "a recipe's dataset as Parquet shards (folder, s3:// gs:// file:// URL, hf://datasets/...) "
        "to train from with data.name=hub data.path=...",
        pack_parser,
        pack,
    ),
}


# A user's mistake or the system's refusal, reported in one line: recipe keys (RecipeError), unreadable
# audio (AudioReadError), damaged model files and refused comparisons are ValueErrors (the loaders turn
# their libraries' errors into them); missing, unreadable or unwritable paths and full disks are OSErrors.
# Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def error_line(err: Exception) -> str:
    """The one line that reports `err`: a system error as `path: problem`, the rest as their message."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        paths = f"{err.filename} -> {err.filename2}" if err.filename2 else err.filename
        text = f"{paths}: {err.strerror}"
    else:
        text = str(err)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune ...`: run a command; a user's mistake prints one line and exits 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FINETUNE_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    console.configure(replica=int(os.environ.get("RANK", "0")) > 0)  # under torchrun / accelerate launch
    name, argv = (argv[0], argv[1:]) if argv and argv[0] in COMMANDS else (DEFAULT, argv)
    command = COMMANDS[name]
    try:
        return command.run(command.parser().parse_intermixed_args(argv))  # options and positionals in any order
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
