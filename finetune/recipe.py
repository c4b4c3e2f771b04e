"""Recipes: typed, frozen dataclasses loaded from YAML, with dotted `key=value` overrides.

One schema serves every recipe. Unknown keys, wrong types and invalid choices are errors that
name the key and what would be valid, raised before anything heavy runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("finetune")

ENCODER = "encoder"  # model.name of plug-in encoders (finetune.backbones.plugin.build_encoder)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(ValueError):
    """A recipe or an override is invalid; the message names the key."""


def listed(names) -> str:
    """Names for an error message, comma-separated; "none" when there are none."""
    return ", ".join(map(str, names)) or "none"


def choice(default: Any, *choices: Any, doc: str = "") -> Any:
    """A field restricted to `choices`."""
    return field(default=default, metadata={"choices": choices, "doc": doc})


def option(default: Any = None, doc: str = "", default_factory: Any = None, **bounds: float) -> Any:
    """A documented field; `bounds` (ge, gt, le, lt) are the range a number (or each number of a
    list) must lie in, checked when the recipe is loaded."""
    metadata = {"doc": doc, "bounds": bounds}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


BOUND_TEXT = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
BOUND_TEST = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "le": lambda v, b: v <= b, "lt": lambda v, b: v < b}


def check_bounds(key: str, value: Any, bounds: dict) -> None:
    """Raise RecipeError naming `key` when a number of `value` is not finite (inf, nan: for every
    float key) or lies outside `bounds`."""
    for number in value if isinstance(value, list) else [value]:
        if isinstance(number, float) and not math.isfinite(number):
            raise RecipeError(f"{key}: {number!r} is not a finite number")
        if number is None:
            continue
        for kind, bound in bounds.items():
            if not BOUND_TEST[kind](number, bound):
                rule = " and ".join(f"{BOUND_TEXT[k]} {b:g}" for k, b in bounds.items())
                raise RecipeError(f"{key}: {number!r} is out of range; it must be {rule}")


@dataclass(frozen=True)
class DataConfig:
    # the choices are finetune.data.DATASET_MODULES' names (tests/test_registries.py: the schema imports none of it)
    name: str = choice(
        "gtzan",
        "gtzan",
        "mtat",
        "fma",
        "jamendo",
        "synthetic",
        "folder",
        "hub",
        doc="dataset builder: a named dataset, a folder of your audio, or any datasets dataset",
    )
    root: str | None = option(None, "dataset folder (synthetic: cache folder, generated if absent)")
    path: str | None = option(None, "hub: a Hub dataset id or a local dataset (save_to_disk folder or data files)")
    config: str | None = option(None, "hub: the dataset's configuration name")
    audio_column: str | None = option(None, "hub: the column holding the audio (path or bytes); null = audio")
    label_column: str | None = option(
        None, "folder (metadata.csv) / hub: the label column, one label or a list of tags (multi-label); null = label"
    )
    split_ratios: list[float] = option(
        doc="folder / hub without splits of their own: seeded, stratified train / validation / test fractions",
        default_factory=lambda: [0.8, 0.1, 0.1],
        gt=0,
    )
    split_scheme: str | None = option(None, "dataset's split scheme; null = the dataset's standard")
    allow_missing: bool | None = option(None, "keep going when files named by a split are missing")
    tags: int | None = option(None, "mtat: number of top tags (50, or 188 for all)")
    subset: str | None = option(
        None, "fma: small | medium | large; jamendo: top50tags | genre | instrument | moodtheme | all"
    )
    split_number: int | None = option(None, "jamendo: the official split, 0-4; null = 0", ge=0, le=4)
    task: str | None = option(None, "fma: genre_top | genres_all")
    sample_rate: int | None = option(None, "audio rate fed to the model; null = the model's own", gt=0)
    clip_seconds: float = option(5.0, "training crop length; evaluation windows have this length too", gt=0)
    crops_per_track: int | None = option(
        None,
        "random crops drawn from each training track per epoch; null = "
        "the track's duration over data.clip_seconds (30 s, 3 s crops: 10)",
        ge=1,
    )
    eval_hop_seconds: float | None = option(None, "hop between evaluation windows; null = clip_seconds", gt=0)
    num_workers: int | None = option(None, "DataLoader workers; null = from the core count", ge=0)
    pin_memory: bool | None = option(None, "pinned host memory; null = on when a GPU is used")
    persistent_workers: bool = option(True, "keep DataLoader workers alive between epochs")
    audio_cache: bool | None = option(
        None,
        "decode training audio once into an int16 cache at the model's rate "
        "(fast, uses disk); null = on when it fits in data.audio_cache_max_gib",
    )
    audio_cache_max_gib: float = option(
        4.0,
        "largest training split data.audio_cache=null caches (GTZAN's: 0.4 GiB "
        "at 16 kHz); 0 keeps the automatic cache off",
        ge=0,
    )
    max_tracks: int | None = option(None, "use at most N tracks per split (seeded sample), for quick checks", ge=1)
    folds: int | None = option(
        None,
        "K-fold cross-validation: pool the splits into K label-stratified folds "
        "(at least 3: one tests, the next validates, the rest train); null = the "
        "dataset's own splits",
        ge=3,
    )
    fold: int = option(
        0, "with data.folds: the test fold (0..K-1); validation is the next fold, training the rest", ge=0
    )
    group_by: str = choice(
        "artist",
        "artist",
        "album",
        "none",
        doc="what no split may divide (folds, random and carved splits deal whole groups): "
        "the artist, the album, or none (each track its own group)",
    )
    group_column: str | None = option(
        None,
        "folder (metadata.csv) / hub: the column naming each track's artist "
        "(album); null = the column named like data.group_by, where there is one",
    )
    unsplittable: str = choice(
        "refuse",
        "refuse",
        "leave_out",
        "leak",
        doc="with data.folds, a class some fold would test without training tracks of its "
        "own (all by one artist): refuse, leave it out of the test folds, or deal it by "
        "track (its test tracks then share artists with training)",
    )
    streaming: bool = option(
        False, "stream the training split from its metadata, no header scan (needs train.max_steps)"
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str = option("simple_cnn", "a baseline or backbone name (see `python -m finetune models`)")
    args: dict = option(doc="keyword arguments of the model's builder", default_factory=dict)


@dataclass(frozen=True)
class BackboneConfig:
    path: str | None = option(None, "pretrained weights: Hub id, local folder or .pth; null = from scratch")
    encoder: str | None = option(
        None,
        "model.name=encoder: the encoder's factory, package.module:factory | "
        "hear:package.module | a registered name (see `python -m finetune models`)",
    )
    encoder_weights: str | None = option(
        None,
        "model.name=encoder: a .safetensors file read into the encoder the "
        "factory builds; null = the factory's own weights",
    )
    mode: str = choice("full", "full", "lora", "probe", doc="what trains")
    layer: str = option("last", "representation: last | weighted | <layer index>")
    pooling: str = choice("mean", "mean", "attention", doc="pooling over time")
    freeze_feature_encoder: bool = option(True, "keep the convolutional feature encoder frozen")
    tags: str | None = option(
        None,
        "Won et al. .pth checkpoints: their head's tag vocabulary, mtat | msd | jamendo "
        "| a file with one tag per line in output order; null = mtat",
    )
    head_init: str = choice(
        "random",
        "random",
        "probe",
        doc="probe: fit the new head on frozen embeddings before fine-tuning "
        "(linear probe then fine-tune, Kumar et al. 2022)",
    )


@dataclass(frozen=True)
class LoraConfig:
    r: int = option(8, "LoRA rank", ge=1)
    alpha: int = option(16, "LoRA scaling numerator", gt=0)
    dropout: float = option(0.1, "dropout on the LoRA path", ge=0, lt=1)
    target_modules: list[str] | None = option(None, "module names; null = the backbone's defaults")
    merge_on_export: bool = option(
        True,
        "false: the end-of-run Hub push uploads the LoRA adapter (RUN/adapter) "
        "instead of the merged model; RUN/model is always merged",
    )


@dataclass(frozen=True)
class ProbeConfig:
    layers: str = option("last", "layers to probe: last | all | comma-separated indices")
    weight_decays: list[float] = option(
        doc="L2 penalties tried for the head (full-batch L-BFGS to convergence); the best on validation is kept",
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        ge=0,
    )
    max_iter: int = option(500, "L-BFGS iterations per penalty, at most", ge=1)


@dataclass(frozen=True)
class AugmentConfig:
    probability: float = option(0.0, "chance that each waveform augmentation is applied", ge=0, le=1)
    gain_db: float = option(0.0, "random gain in [-gain_db, +gain_db]", ge=0)
    noise_snr_db: float | None = option(None, "additive white noise at this SNR; null = off")
    time_stretch: float | None = option(None, "max relative stretch (0.1 = 0.9x..1.1x); null = off", ge=0, lt=1)
    pitch_shift: float | None = option(None, "max pitch shift in semitones; null = off", ge=0)
    mixup_alpha: float = option(0.0, "mixup Beta(alpha, alpha); 0 = off", ge=0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = option(10.0, "training epochs (ignored when max_steps > 0)", gt=0)
    max_steps: int = option(-1, "stop after this many optimiser steps; -1 = use epochs", ge=-1)
    batch_size: int = option(16, "per-device training batch size", ge=1)
    eval_batch_size: int | None = option(None, "per-device evaluation batch size; null = batch_size", ge=1)
    lr: float = option(1e-3, "peak learning rate (of the pretrained body when train.head_lr is set)", gt=0)
    head_lr: float | None = option(
        None, "peak learning rate of the new head (classifier, projector, layer weights); null = train.lr", gt=0
    )
    layer_decay: float = option(
        1.0,
        "layer-wise learning-rate decay of pretrained transformer layers: layer k "
        "of L (1 = the top) trains at lr x decay^(L-k), the embeddings at lr x decay^L; "
        "1 = off",
        gt=0,
        le=1,
    )
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = option(0.0, "fraction of steps for linear warm-up", ge=0, lt=1)
    scheduler: str = choice(
        "linear",
        "linear",
        "cosine",
        "constant",
        "constant_with_warmup",
        "reduce_lr_on_plateau",
        doc="learning-rate schedule",
    )
    plateau_patience: int = option(2, "reduce_lr_on_plateau: evaluations without improvement", ge=0)
    plateau_factor: float = option(0.5, "reduce_lr_on_plateau: multiplier on the learning rate", gt=0, lt=1)
    freeze_batch_norm: bool | None = option(
        None,
        "keep batch-norm statistics at their pretrained values while "
        "fine-tuning a baseline; null = on when backbone.path is set",
    )
    grad_accum: int = option(1, "gradient accumulation steps", ge=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm", gt=0)
    precision: str = choice("fp32", "fp32", "fp16", "bf16", doc="mixed precision")
    metric: str | None = option(
        None,
        "validation metric that picks the best checkpoint and drives early "
        "stopping; null = loss (lower is better); or accuracy, macro_f1, roc_auc_macro ...",
    )
    early_stopping_patience: int | None = option(
        None, "evaluations without improvement, counted once train.early_stopping_min_steps are done; null = off", ge=1
    )
    early_stopping_min_steps: int = option(200, "optimizer steps before early stopping may count an evaluation", ge=0)
    eval_steps: int | None = option(None, "evaluate every N steps; null = every epoch", ge=1)
    save_steps: int | None = option(None, "checkpoint every N steps; null = every epoch", ge=1)
    save_total_limit: int = option(2, "checkpoints kept", ge=1)
    logging_steps: int = option(10, "log training loss every N steps", ge=1)
    resume: bool = option(False, "continue from the last checkpoint in output_dir")
    trainer_args: dict = option(
        doc="further transformers.TrainingArguments, e.g. {report_to: wandb, optim: "
        "adamw_torch_fused}; keys a train.* or data.* key sets are refused",
        default_factory=dict,
    )


@dataclass(frozen=True)
class EvalConfig:
    aggregate: str = choice("mean", "mean", "max", doc="window -> track aggregation")
    durations: list[float] | None = option(
        None,
        "after training, re-score the test set cut to these lengths in seconds (the duration study); null = off",
        gt=0,
    )
    max_seconds: float | None = option(
        None, "score only each track's first seconds (full tracks of minutes); null = the whole track", gt=0
    )


@dataclass(frozen=True)
class HubConfig:
    push_to_hub: bool = option(False, "upload the exported model at the end of the run")
    repo_id: str | None = option(None, "user/name on the Hub")
    private: bool = option(False, "create the Hub repository as private")


@dataclass(frozen=True)
class Recipe:
    name: str = option("custom", "recipe name (used in the run folder name)")
    description: str = option("", "one line: what this recipe trains")
    output_dir: str | None = option(None, "run folder; null = runs/<name>-<timestamp>")
    seed: int = option(0, "seed for everything random", ge=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise RecipeError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option_tp in options:
            if option_tp is type(None):
                continue
            try:
                return coerce(value, option_tp, key)
            except RecipeError:
                continue
        raise RecipeError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # `a,b,c` from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, dict)):  # one value for a list of one
            value = [value]
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"{key}: expected a string, got {value!r}")
    raise RecipeError(f"{key}: unsupported type {tp}")


def dotted_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Every recipe key as a dotted name (`train.max_steps`)."""
    cls = cls or Recipe
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += dotted_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def suggestion(key: str, here: list[str], prefix: str) -> str:
    """': did you mean X?' for a mistyped key: the closest spelling among the keys `here` (in the
    section `prefix`), else the same or a close name in another section; '' when nothing is close."""
    leaf = key.rpartition(".")[2]
    close = [prefix + k for k in difflib.get_close_matches(leaf, here, n=1, cutoff=0.7)]
    keys = dotted_keys()
    close = close or [k for k in keys if k.rpartition(".")[2] == leaf][:1]
    close = close or difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    return f": did you mean {close[0]}?" if close else ""


def _build(cls: type, values: dict, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and choices."""
    if not isinstance(values, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise RecipeError(
            f"unknown key {prefix}{unknown[0]}{suggestion(prefix + unknown[0], fields, prefix)} "
            f"(valid keys here: {', '.join(fields)})"
        )
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key + ".")
            continue
        value = coerce(value, tp, key)
        check_bounds(key, value, fields[name].metadata.get("bounds", {}))
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise RecipeError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_ranges(recipe: Recipe) -> None:
    """Checks across keys (each key's own range is checked by `check_bounds` as it is read)."""
    if recipe.data.streaming and recipe.train.max_steps <= 0:
        raise RecipeError("train.max_steps: a streamed dataset has no length; set train.max_steps > 0")
    if recipe.data.streaming and recipe.backbone.mode == "probe":
        raise RecipeError(
            "data.streaming: the probe embeds every training window once into its cache; "
            "use the indexed training split (data.streaming=false)"
        )
    train = recipe.train
    if train.eval_steps and train.save_steps and train.save_steps % train.eval_steps:
        raise RecipeError(
            f"train.save_steps: {train.save_steps} must be a multiple of train.eval_steps "
            f"({train.eval_steps}), so that the best checkpoint can be kept"
        )
    data = recipe.data
    if data.folds is not None:
        if not 0 <= data.fold < data.folds:
            raise RecipeError(f"data.fold: {data.fold} is not a fold of data.folds={data.folds} (0..{data.folds - 1})")
        if data.streaming:
            raise RecipeError("data.folds: cross-validation pools indexed splits; use data.streaming=false")
    if len(data.split_ratios) != 3 or abs(sum(data.split_ratios) - 1) > 1e-6:
        raise RecipeError(
            f"data.split_ratios: {data.split_ratios} must be three fractions (train, validation, test) that sum to 1"
        )
    if not recipe.probe.weight_decays:
        raise RecipeError("probe.weight_decays: list at least one penalty (e.g. 0.01)")
    if recipe.backbone.head_init == "probe" and recipe.backbone.pooling != "mean":
        raise RecipeError("backbone.head_init=probe fits the head on mean-pooled embeddings: use backbone.pooling=mean")
    if recipe.model.name == ENCODER and not recipe.backbone.encoder:
        raise RecipeError(
            "backbone.encoder: model.name=encoder builds the encoder it names; set it to "
            "package.module:factory, hear:package.module or a registered name (python -m finetune models)"
        )
    layer = recipe.backbone.layer
    if layer not in ("last", "weighted") and not layer.lstrip("-").isdigit():
        raise RecipeError(f"backbone.layer: {layer!r} is not last, weighted or a layer index")


def from_dict(values: dict) -> Recipe:
    """Validate a nested mapping into a Recipe."""
    recipe = _build(Recipe, values, "")
    _check_ranges(recipe)
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], "3e-4" parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    if not key:
        raise RecipeError(f"override {text!r} has no key")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Return a copy of `values` with dotted overrides applied (keys checked later by from_dict)."""
    merged = yaml.safe_load(yaml.safe_dump(values))
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{'.'.join(path[: i + 1])} is not a section; cannot set {text!r}")
            node = child
        node[path[-1]] = value
    return merged


# data.* keys that describe one dataset (where it is, its split and options), as opposed to how clips
# are drawn from any dataset: `root` and the dataset builders' options (tests/test_registries.py)
DATASET_KEYS = (
    "root",
    "split_scheme",
    "allow_missing",
    "tags",
    "subset",
    "split_number",
    "task",
    "path",
    "config",
    "audio_column",
    "label_column",
    "split_ratios",
    "group_by",
    "group_column",
)


def overridden_keys(overrides: list[str], holder: tuple[str, ...]) -> set[str]:
    """The keys right under the dotted `holder` that the overrides set (`data.root=...` or
    `data={root: ...}` for ("data",); `model.args.n_mels=...` or `model={args: {...}}` for
    ("model", "args"))."""
    keys = set()
    for text in overrides:
        path, value = parse_override(text)
        if tuple(path[: len(holder)]) == holder and len(path) > len(holder):
            keys.add(path[len(holder)])
        elif holder[: len(path)] == tuple(path):
            keys |= set(nested(value, holder[len(path) :]))
    return keys


def nested(values: Any, parts: tuple[str, ...]) -> dict:
    """The mapping at `parts` inside `values` (itself, not a copy); {} where there is none."""
    for part in parts:
        values = values.get(part) if isinstance(values, dict) else None
    return values if isinstance(values, dict) else {}


def drop_switched_options(
    values: dict, merged: dict, overrides: list[str], holder: tuple[str, ...], keys: tuple[str, ...] | None = None
) -> dict:
    """When the overrides change the name of the section `holder[0]`, the recipe file's options for
    its former choice (the keys under `holder`, only `keys` when given) go with it: those the
    overrides do not set again are dropped from `merged`, so the defaults apply, and the drop is
    logged."""
    section = holder[0]
    before, after = values.get(section) or {}, merged.get(section) or {}
    default = typing.get_type_hints(Recipe)[section].name
    if not isinstance(after, dict) or after.get("name", default) == before.get("name", default):
        return merged
    old, new = nested(before, holder[1:]), nested(after, holder[1:])
    kept = overridden_keys(overrides, holder)
    dropped = [key for key in old if (keys is None or key in keys) and key not in kept and old[key] is not None]
    for key in dropped:
        new.pop(key, None)
    if dropped:
        logger.info(
            "%s.name=%s: the recipe's options for %s left out: %s",
            section,
            after.get("name"),
            before.get("name", default),
            ", ".join(f"{'.'.join(holder)}.{key}={old[key]}" for key in dropped),
        )
    return merged


def switch_dataset(values: dict, merged: dict, overrides: list[str]) -> dict:
    """When the overrides change data.name, the recipe file's options of its own dataset
    (`data.split_scheme: fault_filtered` of a GTZAN recipe ...) go with it."""
    return drop_switched_options(values, merged, overrides, ("data",), DATASET_KEYS)


def switch_model(values: dict, merged: dict, overrides: list[str]) -> dict:
    """When the overrides change model.name, the recipe file's model.args go with it (another
    model's builder takes other arguments); model args the overrides set are kept."""
    return drop_switched_options(values, merged, overrides, ("model", "args"))


def packaged_recipes() -> dict[str, Path]:
    """Packaged recipe names -> YAML paths."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_path(name_or_path: str) -> Path:
    """A packaged recipe name or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    recipes = packaged_recipes()
    if name_or_path not in recipes:
        raise RecipeError(
            f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(recipes)} (or give a path to a YAML file)"
        )
    return recipes[name_or_path]


def check_unique_keys(node: yaml.Node, path: Path, prefix: str = "") -> None:
    """Raise RecipeError naming the file, the dotted key and its lines when a mapping of the YAML
    node tree `node` gives a key twice (YAML would keep the last one without a word)."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_unique_keys(item, path, prefix)
    if not isinstance(node, yaml.MappingNode):
        return
    lines = {}
    for key, value in node.value:
        name, line = f"{prefix}{key.value}", key.start_mark.line + 1
        if name in lines:
            raise RecipeError(f"{path}: {name} is given twice (lines {lines[name]} and {line}); keep one")
        lines[name] = line
        check_unique_keys(value, path, f"{name}.")


def read_recipe_file(path: Path) -> dict:
    """The mapping a recipe file holds ({} when empty); refused, naming the file: invalid YAML, a key
    given twice, a document that is not a mapping."""
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()  # None: no document (empty, or comments only)
        check_unique_keys(node, path)
        values = {} if node is None else loader.construct_document(node)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    finally:
        loader.dispose()
    if not isinstance(values, dict):
        raise RecipeError(
            f"{path}: a recipe is a mapping of keys (`train:` with `lr: 0.001` under it ...), "
            f"not {'a list' if isinstance(values, list) else repr(values)}"
        )
    return values


def load(name_or_path: str, overrides: list[str] = ()) -> Recipe:
    """Load a packaged or file recipe, apply overrides, validate."""
    path = resolve_path(name_or_path)
    values = read_recipe_file(path)
    values.setdefault("name", path.stem)
    overrides = list(overrides)
    merged = apply_overrides(values, overrides)
    return from_dict(switch_model(values, switch_dataset(values, merged, overrides), overrides))


def first_line_comment(path: Path) -> str:
    """The recipe file's opening comment line, for listings."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def describe_schema() -> str:
    """Every key with its default and doc, for `--help`."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices = f.metadata.get("choices")
            doc = f.metadata.get("doc", "")
            if choices:
                doc += f" ({' | '.join(map(str, choices))})"
            lines.append(f"  {prefix + f.name:<32} {default!s:<10} {doc}")

    walk(Recipe, "")
    return "\n".join(lines)
