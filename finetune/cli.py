"""Command line: argument parsing only; the work happens in the modules it dispatches to."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from finetune import recipe as recipes

USAGE = """python -m finetune --recipe NAME_OR_YAML [--dry-run] [key=value ...]
       python -m finetune recipes
       python -m finetune models"""

DESCRIPTION = """Fine-tune pretrained audio models (AST, MERT, wav2vec2/HuBERT) and train from-scratch
baselines for music genre classification and tagging, all through one transformers Trainer.

A run writes a folder (runs/<recipe>-<timestamp>, or output_dir=...) holding recipe.yaml,
metrics.json, report.md, report.html, checkpoints and model/ (safetensors + config).

commands:
  (none)     train and evaluate a recipe: python -m finetune --recipe demo
  recipes    list the packaged recipes
  models     list the model names a recipe can use (model.name=...)

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


COMMANDS = {"recipes": lambda argv: list_recipes(), "models": lambda argv: list_models()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "train":
        argv = argv[1:]
    return train(argv)
