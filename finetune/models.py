"""The model registry: one explicit dict from recipe `model.name` to a builder function."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError, safe_open
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from baselines import BASELINE_BUILDERS, MODEL_CLASSES  # importing registers the baseline classes with the Auto classes
from baselines.common import SpectrogramConfig
from baselines.loading import is_won_checkpoint, won_vocabulary
from finetune.backbones import AUTO, BACKBONE_BUILDERS, build_auto  # ... and the finetune_* backbone subclasses
from finetune.backbones.heads import base_model_name
from finetune.backbones.lora import export_ready, lora_layers, save_adapter
from finetune.bundle import TOOLKIT_ARGS, ModelBundle
from finetune.features import log_mel_needs
from finetune.recipe import Recipe, RecipeError, check_bounds, coerce, listed

MODEL_BUILDERS: dict[str, Callable[..., ModelBundle]] = {**BASELINE_BUILDERS, **BACKBONE_BUILDERS, AUTO: build_auto}


def model_builders() -> dict[str, Callable[..., ModelBundle]]:
    """Every model name a recipe can use -> its builder."""
    return MODEL_BUILDERS


# Names a builder's string annotations may use (baseline configs postpone their annotations).
ANNOTATION_NAMES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple,
                    "dict": dict, "None": None}


def _annotation(param: inspect.Parameter):
    """A parameter's annotation as a type (evaluated when it is a string), or None when absent."""
    tp = param.annotation
    if tp is inspect.Parameter.empty:
        return None
    return eval(tp, {"__builtins__": {}}, ANNOTATION_NAMES) if isinstance(tp, str) else tp


def check_model_args(recipe: Recipe) -> dict:
    """`model.args` checked against the builder's signature and converted to its annotated types.

    Fails fast, naming the key, when `model.name` is unknown, an argument is not the builder's,
    a value has the wrong type, or `backbone.mode` does not apply to the model.
    """
    builders = model_builders()
    name = recipe.model.name
    if name not in builders:
        raise RecipeError(f"model.name: {name!r} is not one of {', '.join(sorted(builders))}")
    if name in BASELINE_BUILDERS:
        check_baseline_backbone(recipe)
    elif recipe.train.freeze_batch_norm:
        raise RecipeError(f"train.freeze_batch_norm: model {name!r} has no batch norm (it is for the baselines)")
    elif recipe.backbone.tags is not None:
        raise RecipeError(f"backbone.tags: model {name!r} does not import Won et al. .pth checkpoints, whose "
                          "head vocabulary this names; set backbone.tags=null")
    if name == AUTO:
        check_auto_backbone(recipe)
    params = inspect.signature(builders[name]).parameters
    accepted = [p for p in params if p not in TOOLKIT_ARGS]
    args = {}
    for key, value in recipe.model.args.items():
        if key not in accepted:
            raise RecipeError(f"unknown key model.args.{key} for model {name!r}; valid: {listed(accepted)}")
        tp = _annotation(params[key])
        args[key] = value if tp is None else coerce(value, tp, f"model.args.{key}")
        check_bounds(f"model.args.{key}", args[key], {})
    check_sample_rate(recipe, args)
    return args


def check_sample_rate(recipe: Recipe, args: dict) -> None:
    """Refuse `data.sample_rate` for a model whose rate is fixed (the pretrained backbones), and a
    rate too low for a baseline's log-mel front end (`finetune.features.log_mel_needs`), naming
    the key that sets it: data.sample_rate, else model.args.sample_rate (or its default)."""
    name = recipe.model.name
    params = inspect.signature(model_builders()[name]).parameters
    if recipe.data.sample_rate is not None and "sample_rate" not in params:
        raise RecipeError(f"data.sample_rate: model {name!r} has a fixed rate (its feature extractor's); "
                          "unset it (data.sample_rate=null)")
    if name not in MODEL_CLASSES or not issubclass(MODEL_CLASSES[name].config_class, SpectrogramConfig):
        return
    settings = {key: args.get(key, params[key].default) for key in ("sample_rate", "n_fft", "f_max")}
    if recipe.data.sample_rate is not None:
        key, rate = "data.sample_rate", recipe.data.sample_rate
    else:
        key, rate = "model.args.sample_rate", settings["sample_rate"]
    for need, lowest in log_mel_needs(settings["n_fft"], settings["f_max"], recipe.data.clip_seconds).items():
        if rate < lowest:
            raise RecipeError(f"{key}: {rate} Hz is too low for the log-mel front end of model {name!r}: "
                              f"it needs at least {math.ceil(lowest)} Hz for {need}")


def check_baseline_backbone(recipe: Recipe) -> None:
    """Baselines start fresh or from a local file, and train fully or as a frozen probe (a head
    fitted on their cached embeddings); LoRA and layer-wise decay are for the pretrained backbones."""
    mode, name, path = recipe.backbone.mode, recipe.model.name, recipe.backbone.path
    if path is not None and not Path(path).exists():
        raise RecipeError(f"backbone.path: {path} does not exist; a baseline starts from a local Won et "
                          "al. .pth file or an exported model folder (backbone.path=null: from scratch)")
    if mode == "lora":
        raise RecipeError(f"backbone.mode: lora applies to the pretrained backbones "
                          f"({listed([*BACKBONE_BUILDERS, AUTO])}), not to baseline {name!r}; use full or probe")
    if recipe.backbone.head_init == "probe" and path is None:
        raise RecipeError(f"backbone.head_init=probe: baseline {name!r} starts from scratch here; it needs "
                          "pretrained weights (backbone.path=<Won et al. .pth or exported folder>)")
    if recipe.train.layer_decay != 1:
        raise RecipeError(f"train.layer_decay: layer-wise decay is for the pretrained transformer backbones "
                          f"({listed(BACKBONE_BUILDERS)}), not baseline {name!r}; use train.head_lr")
    if mode == "probe" and recipe.probe.layers != "last":
        raise RecipeError(f"probe.layers: baseline {name!r} is probed on its embedding only; "
                          "the layer sweep is for the pretrained backbones (use probe.layers=last)")
    if recipe.backbone.tags is not None:
        if not is_won_checkpoint(path):
            raise RecipeError(f"backbone.tags: names the head vocabulary of a Won et al. .pth checkpoint; "
                              f"backbone.path={path} is not one (set backbone.tags=null)")
        won_vocabulary(recipe.backbone.tags)  # a vocabulary name or a readable file


def check_auto_backbone(recipe: Recipe) -> None:
    """`model.name=auto` reads everything from the checkpoint, so it needs one."""
    if recipe.backbone.path is None:
        raise RecipeError("backbone.path: model.name=auto builds the checkpoint it names; set a Hub id "
                          "(e.g. microsoft/wavlm-base-plus) or a local folder")


def build_model(recipe: Recipe, label_names: list[str], multi_label: bool) -> ModelBundle:
    """Build the recipe's model for a task with these labels."""
    args = check_model_args(recipe)
    builder = model_builders()[recipe.model.name]
    params = inspect.signature(builder).parameters
    if recipe.data.sample_rate is not None:  # a model that takes no rate is refused by check_model_args
        args["sample_rate"] = recipe.data.sample_rate
    for section in ("lora", "probe"):
        if section in params:
            args[section] = getattr(recipe, section)
    return builder(
        num_labels=len(label_names),
        label_names=list(label_names),
        multi_label=multi_label,
        backbone=recipe.backbone,
        **args,
    )


def head_names(model) -> list[str]:
    """The model's top-level modules that map pooled embeddings to logits (new for each task): a
    baseline's `head_module_names`, else every child beside the backbone (projector, classifier,
    pooler)."""
    names = getattr(model, "head_module_names", None)
    if names is not None:
        return list(names)
    return [name for name, _ in model.named_children() if name != base_model_name(model)]


CHECKPOINT_STATE = "trainer_state.json"  # the Trainer writes it into every checkpoint-<step>/ of a run


def read_json(file: Path):
    """The content of a JSON file the toolkit wrote; a ValueError naming it when it is damaged."""
    try:
        return json.loads(file.read_text())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{file.parent}: {file.name} is damaged (not valid JSON: {err})") from err


def check_model_files(folder: str | Path) -> None:
    """A ValueError naming the file when a JSON or safetensors file of a saved model (or adapter)
    folder is damaged: not valid JSON, or weights that do not cover their header (truncated)."""
    folder = Path(folder)
    for file in sorted(folder.glob("*.json")):
        read_json(file)
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(file, "pt"):
                pass
        except SafetensorError as err:
            raise ValueError(f"{folder}: {file.name} is damaged ({err})") from err


def check_model_folder(path: Path) -> None:
    """Refuse, naming the reason, a folder `load_model` cannot load: a run's training checkpoint (it
    lacks the windowing and feature extractor the run saves with model/), a folder without
    config.json, damaged files."""
    if (path / CHECKPOINT_STATE).is_file():
        raise ValueError(f"{path} is a training checkpoint, not a model folder: pass the run folder "
                         f"{path.parent} (its model/ holds the trained model)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a run folder (with model/) nor a model folder (with config.json)")
    check_model_files(path)


def load_model(path: str | Path) -> ModelBundle:
    """Load a saved model folder (ours or a transformers audio classifier) with its extractor; a
    folder that cannot be loaded is a ValueError or OSError naming it and why."""
    path = Path(path)
    check_model_folder(path)
    try:
        model = AutoModelForAudioClassification.from_pretrained(path)
        extractor = AutoFeatureExtractor.from_pretrained(path)
    except (OSError, ValueError) as err:  # a missing weights or preprocessor file, an unknown model type
        raise ValueError(f"{path}: cannot load the model ({err})") from err
    return ModelBundle(model=model.eval(), feature_extractor=extractor,
                       sample_rate=int(extractor.sampling_rate))


def adapter_only(model, folder: str | Path) -> bool:
    """Write the LoRA adapters, heads and layer weights alone into `folder` (for `export
    --adapter-only`; loaded with `finetune.backbones.lora.load_adapter`); False when the model
    has no adapters."""
    if not lora_layers(model):
        return False
    save_adapter(model, folder)
    return True


def export_model(model):
    """The model as it is saved into the run folder's model/: LoRA adapters merged."""
    return export_ready(model)
