"""Every model name a recipe can use, with its builder's signature, as data: what checking a recipe
and `finetune models` need, read without importing torch or transformers.

The data (`model_options.json`, beside this file) is written from the builders themselves by
`finetune.models.write_model_options()` (`python -m finetune.models`), so the builders stay the one
place their options are defined; tests/test_registries.py checks that it is current.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OPTIONS_FILE = Path(__file__).resolve().parent / "model_options.json"
KINDS = ("baseline", "backbone", "auto")  # from-scratch baseline, named backbone family, `auto`
REQUIRED = "<required>"  # a parameter without a default, as the file writes it

# Names a builder's string annotations may use (baseline configs postpone their annotations).
ANNOTATION_NAMES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "None": None,
}


def split_top_level(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside brackets, each part stripped."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + [current.strip()]


def parse_annotation(text: str):
    """A written annotation (`int | None`, `list[int] | tuple[int, ...]`) as a type, from the names in
    ANNOTATION_NAMES only (no eval)."""
    options = []
    for part in split_top_level(text, "|"):
        name, _, inner = part.partition("[")
        if name not in ANNOTATION_NAMES:
            raise ValueError(f"{OPTIONS_FILE}: annotation {text!r} uses {name!r}; known: {', '.join(ANNOTATION_NAMES)}")
        kind = ANNOTATION_NAMES[name]
        if inner:
            args = tuple(... if arg == "..." else parse_annotation(arg) for arg in split_top_level(inner[:-1], ","))
            kind = kind[args if len(args) > 1 else args[0]]
        options.append(kind)
    return functools.reduce(operator.or_, options)


@dataclass(frozen=True)
class ModelOptions:
    """One model name: its kind, its builder's first doc line, its parameters (name -> annotation as
    written, or None; default, or REQUIRED), whether it has a spectrogram front end (`log_mel`, the
    old name) and the parameters whose values come from a registry (name -> the valid values)."""

    kind: str
    summary: str
    parameters: dict[str, tuple[str | None, object]]
    log_mel: bool = False
    choices: dict[str, list] = dataclasses.field(default_factory=dict)

    def annotation(self, name: str):
        """Parameter `name`'s annotation as a type, or None when it has none."""
        written = self.parameters[name][0]
        return None if written is None else parse_annotation(written)

    def default(self, name: str):
        return self.parameters[name][1]


def options_of(builder: Callable, kind: str, log_mel: bool = False, choices: dict | None = None) -> ModelOptions:
    """The ModelOptions of a builder (what `write_model_options` records)."""
    params = {}
    for name, param in inspect.signature(builder).parameters.items():
        tp = param.annotation
        written = None if tp is inspect.Parameter.empty else tp if isinstance(tp, str) else inspect.formatannotation(tp)
        default = REQUIRED if param.default is inspect.Parameter.empty else param.default
        params[name] = (written, list(default) if isinstance(default, tuple) else default)
    doc = (builder.__doc__ or "").strip().splitlines()
    return ModelOptions(kind, doc[0] if doc else "", params, log_mel, dict(choices or {}))


def to_json(options: dict[str, ModelOptions]) -> str:
    """The file's text: one line per model's facts, one per parameter (so a change reads as a diff)."""
    models = []
    for name, o in options.items():
        params = ",\n".join(f"   {json.dumps(p)}: {json.dumps(list(v))}" for p, v in o.parameters.items())
        facts = json.dumps({"kind": o.kind, "summary": o.summary, "log_mel": o.log_mel, "choices": o.choices})[:-1]
        models.append(f' {json.dumps(name)}: {facts}, "parameters": {{\n{params}\n }}}}')
    return "{\n" + ",\n".join(models) + "\n}\n"


def read_model_options(text: str | None = None) -> dict[str, ModelOptions]:
    """Model name -> ModelOptions, in the registry's order, from `model_options.json` (or `text`)."""
    raw = json.loads(OPTIONS_FILE.read_text() if text is None else text)
    return {
        name: ModelOptions(
            o["kind"],
            o["summary"],
            {p: tuple(v) for p, v in o["parameters"].items()},
            o["log_mel"],
            o.get("choices", {}),
        )
        for name, o in raw.items()
    }


MODEL_OPTIONS = read_model_options()


def names_of(kind: str) -> list[str]:
    """The model names of one kind, in the registry's order."""
    return [name for name, options in MODEL_OPTIONS.items() if options.kind == kind]
