"""Command line: argument parsing only; the work happens in the modules it dispatches to."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from finetune import recipe as recipes

USAGE = """python -m finetune --recipe NAME_OR_YAML [--dry-run] [key=value ...]
       python -m finetune recipes | models
       python -m finetune predict --model RUN_OR_MODEL_DIR FILE_OR_FOLDER ...
       python -m finetune export RUN --to DIR [--push-to-hub USER/NAME [--private]]"""

DESCRIPTION = """Fine-tune pretrained audio models (AST, MERT, wav2vec2/HuBERT) and train from-scratch
baselines for music genre classification and tagging, all through one transformers Trainer.

A run writes a folder (runs/<recipe>-<timestamp>, or output_dir=...) holding recipe.yaml,
metrics.json, report.md, report.html, checkpoints and model/ (safetensors + config).

commands:
  (none)     train and evaluate a recipe: python -m finetune --recipe demo
  recipes    list the packaged recipes
  models     list the model names a recipe can use (model.name=...)
  predict    score audio files of any length with a trained model (JSON line per file)
  export     write a Hub-ready folder (weights, config, model card) and optionally push it

examples:
  python -m finetune --recipe demo
  python -m finetune --recipe cnn_gtzan data.root=/data/gtzan train.lr=3e-4
  python -m finetune --recipe my_recipe.yaml --dry-run
"""


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m finetune", usage=USAGE, description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe keys (override with key=value; lists as a,b,c; null for none):\n"
        + recipes.describe_schema(),
    )
    parser.add_argument("--recipe", required=True,
                        help="a packaged recipe name (see `recipes`) or a path to a YAML file")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print the resolved recipe, then exit without running")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.lr=3e-4 data.root=/data/gtzan")
    return parser


def list_recipes() -> int:
    for name, path in recipes.packaged_recipes().items():
        print(f"{name:<28} {recipes.first_line_comment(path)}")
    return 0


def list_models() -> int:
    from finetune.models import model_builders

    for name, builder in sorted(model_builders().items()):
        doc = (builder.__doc__ or "").strip().splitlines()
        print(f"{name:<20} {doc[0] if doc else ''}")
    return 0


def train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    try:
        recipe = recipes.load(args.recipe, args.overrides)
        from finetune.run import check_recipe

        check_recipe(recipe)
    except recipes.RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(recipe.to_yaml(), end="")
        return 0
    from finetune.run import run

    run_dir = run(recipe)
    print(f"run folder: {run_dir}")
    return 0


def predict(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune predict",
        description="Score audio files of any length (read in windows, averaged per file). "
        "Prints one JSON line per file: file, duration, labels [{label, score}], "
        "and with --per-window the window timeline.")
    parser.add_argument("--model", required=True, help="a run folder or a model folder")
    parser.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=5, help="labels to print (default 5)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="tagging: print every tag scoring at least this instead of the top k")
    parser.add_argument("--per-window", action="store_true", help="add each window's scores")
    parser.add_argument("--batch-size", type=int, default=16, help="windows scored per batch")
    args = parser.parse_args(argv)
    from finetune.data.audio import AudioReadError
    from finetune.predict import Predictor, audio_files

    predictor = Predictor.from_pretrained(args.model, batch_size=args.batch_size)
    failed = 0
    for path in audio_files(args.inputs):
        try:
            result = predictor.predict(path, top_k=args.top_k, threshold=args.threshold,
                                       per_window=args.per_window)
        except (AudioReadError, FileNotFoundError) as err:
            failed += 1
            result = {"file": str(path), "error": str(err)}
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune export",
        description="Write a Hub-ready folder from a run: safetensors weights, config.json with "
        "id2label, preprocessor_config.json, recipe.yaml and a model card README.md; "
        "optionally upload it (token from HF_TOKEN or `hf auth login`).")
    parser.add_argument("run", help="a run folder")
    parser.add_argument("--to", required=True, help="folder to write")
    parser.add_argument("--push-to-hub", metavar="USER/NAME", help="upload the folder to this repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    from finetune import hub

    folder = hub.export(args.run, args.to)
    print(f"exported: {folder}")
    if args.push_to_hub:
        try:
            print(f"pushed: {hub.push_to_hub(folder, args.push_to_hub, args.private)}")
        except hub.HubError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


COMMANDS = {
    "recipes": lambda argv: list_recipes(),
    "models": lambda argv: list_models(),
    "predict": predict,
    "export": export,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "train":
        argv = argv[1:]
    return train(argv)
