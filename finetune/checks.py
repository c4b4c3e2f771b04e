"""Every check of a recipe that needs no data or weights: what `--dry-run` runs, and what a run runs
first. It reads the registries as data (`finetune.model_options`, the dataset modules' options,
`finetune.metrics`), so it imports no heavy library: transformers only when a recipe sets
`train.trainer_args` (checked against its TrainingArguments), huggingface_hub only for a recipe that
pushes to the Hub, torch only for `backbone.tags` and for a `model.args.frontend` asked of pretrained
weights (the front end they were trained with).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from enum import Enum
from pathlib import Path

from finetune.bundle import TOOLKIT_ARGS
from finetune.data import known_multi_label
from finetune.data.recipe_data import dataset_arguments
from finetune.encoder_specs import check_findable, check_weights_file
from finetune.metrics import LOSS, selectable_names, task_name
from finetune.model_options import MODEL_OPTIONS, names_of
from finetune.recipe import ENCODER, Recipe, RecipeError, check_bounds, coerce, listed


def check_recipe(recipe: Recipe) -> None:
    """Every check that needs no data or weights: run before `--dry-run` prints and before a run
    (train.metric here when the dataset's options tell its task; folder and hub: once indexed)."""
    multi_label = known_multi_label(recipe.data.name, **dataset_arguments(recipe))
    if multi_label is not None:
        check_metric(recipe, multi_label)
    check_model_args(recipe)
    check_trainer_args(recipe)
    if recipe.hub.push_to_hub:
        check_hub_push(recipe.hub.repo_id)


def check_hub_push(repo_id: str | None) -> None:
    """Refuse an end-of-run upload that cannot happen: no `hub.repo_id`, one the Hub refuses, or
    the Hub in offline mode (HF_HUB_OFFLINE=1), which the run would only find out after training."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise RecipeError("hub.repo_id: set it (user/name) when hub.push_to_hub=true")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise RecipeError(
            f"hub.repo_id: {repo_id!r} is not a Hub repository id (user/name or name: letters, "
            "digits, '-', '_' and '.', at most 96 characters, no '--' or '..')"
        ) from err
    if constants.HF_HUB_OFFLINE:
        raise RecipeError(
            "hub.push_to_hub=true: the upload cannot happen offline (HF_HUB_OFFLINE=1); unset "
            "HF_HUB_OFFLINE, or train with hub.push_to_hub=false and push the run later with "
            f"`python -m finetune export RUN --to DIR --push-to-hub {repo_id}`"
        )


def check_metric(recipe: Recipe, multi_label: bool, num_labels: int | None = None) -> None:
    """Refuse a `train.metric` that validation does not report for this task (a score of the metric
    registry, `finetune.metrics.selectable_names`), listing the valid ones; `num_labels` None: not
    known yet (before the dataset is indexed), any count."""
    metric = recipe.train.metric or LOSS
    valid = selectable_names(task_name(multi_label), num_labels)
    if metric not in valid:
        task = "multi-label tagging" if multi_label else "single-label classification"
        over = "" if num_labels is None else f" over {num_labels} {'tags' if multi_label else 'classes'}"
        raise RecipeError(
            f"train.metric: {metric!r} is not a validation metric of {task}{over}; valid: {listed(valid)}"
        )


def check_plugin_keys(recipe: Recipe) -> None:
    """backbone.encoder / encoder_weights only with model.name=encoder, which has no layer list to decay."""
    name = recipe.model.name
    given = [key for key in ("encoder", "encoder_weights") if getattr(recipe.backbone, key) is not None]
    if given and name != ENCODER:
        raise RecipeError(
            f"backbone.{given[0]}: only model.name={ENCODER} builds a plug-in encoder; model {name!r} "
            f"would ignore it (set model.name={ENCODER}, or backbone.{given[0]}=null)"
        )
    if name == ENCODER and recipe.backbone.encoder:
        check_findable(recipe.backbone.encoder)
    if name == ENCODER and recipe.backbone.encoder_weights:
        check_weights_file(recipe.backbone.encoder_weights)
    if name == ENCODER and recipe.train.layer_decay != 1:
        raise RecipeError(
            "train.layer_decay: a plug-in encoder has no layer list the toolkit knows, so layer-wise "
            "decay cannot apply; use train.head_lr, or train.layer_decay=1"
        )


def check_model_args(recipe: Recipe) -> dict:
    """`model.args` checked against the builder's signature and converted to its annotated types.

    Fails fast, naming the key, when `model.name` is unknown, an argument is not the builder's,
    a value has the wrong type, or `backbone.mode` does not apply to the model.
    """
    name = recipe.model.name
    if name not in MODEL_OPTIONS:
        raise RecipeError(f"model.name: {name!r} is not one of {', '.join(sorted(MODEL_OPTIONS))}")
    options = MODEL_OPTIONS[name]
    if options.kind == "baseline":
        check_baseline_backbone(recipe)
    elif recipe.train.freeze_batch_norm:
        raise RecipeError(f"train.freeze_batch_norm: model {name!r} has no batch norm (it is for the baselines)")
    elif recipe.backbone.tags is not None:
        raise RecipeError(
            f"backbone.tags: model {name!r} does not import Won et al. .pth checkpoints, whose "
            "head vocabulary this names; set backbone.tags=null"
        )
    if options.kind == "auto":
        check_auto_backbone(recipe)
    check_plugin_keys(recipe)
    accepted = [p for p in options.parameters if p not in TOOLKIT_ARGS]
    args = {}
    for key, value in recipe.model.args.items():
        if key not in accepted:
            raise RecipeError(f"unknown key model.args.{key} for model {name!r}; valid: {listed(accepted)}")
        tp = options.annotation(key)
        args[key] = value if tp is None else coerce(value, tp, f"model.args.{key}")
        check_bounds(f"model.args.{key}", args[key], {})
        if key in options.choices and args[key] not in options.choices[key]:
            raise RecipeError(f"model.args.{key}: {args[key]!r} is not one of {listed(options.choices[key])}")
    if options.kind == "baseline":
        check_frontend(recipe, args)
    check_sample_rate(recipe, args)
    return args


FRONTEND_SETTINGS = ("frontend", "sample_rate", "n_fft", "f_min", "f_max", "cqt_bins", "bins_per_octave")
C1_HZ = 32.70319566257483  # the cqt front end's lowest bin when f_min is 0
HANN_BANDWIDTH = 1.50018310546875  # librosa.filters.window_bandwidth("hann"), in FFT bins


def cqt_top_edge(f_min: float, bins: int, bins_per_octave: int) -> float:
    """The upper edge (Hz) of the cqt front end's top filter, as librosa.filters.wavelet bounds it."""
    alpha = (2 ** (2 / bins_per_octave) - 1) / (2 ** (2 / bins_per_octave) + 1)  # relative bandwidth, 1 / Q
    top = (f_min or C1_HZ) * 2 ** ((bins - 1) / bins_per_octave)
    return top * (1 + 0.5 * HANN_BANDWIDTH * alpha)


def frontend_needs(settings: dict, clip_seconds: float) -> dict[str, float]:
    """The lowest sample rates (Hz) at which a baseline's front end works on `clip_seconds` clips,
    each under what needs it. The STFT front ends (all but cqt) pad n_fft // 2 samples by reflection,
    so a clip must hold more samples than that, and their bands up to `f_max` need f_max at most the
    Nyquist frequency; cqt pads with zeros, and its top filter must end below the Nyquist frequency."""
    if settings["frontend"] == "cqt":
        edge = cqt_top_edge(settings["f_min"], settings["cqt_bins"], settings["bins_per_octave"])
        return {
            f"cqt_bins = {settings['cqt_bins']} from {settings['f_min'] or C1_HZ:g} Hz at "
            f"{settings['bins_per_octave']} per octave (the top filter reaches {edge:.0f} Hz)": 2 * edge
        }
    n_fft = settings["n_fft"]
    needs = {
        f"one STFT frame (more than n_fft // 2 = {n_fft // 2} samples in a {clip_seconds:g} s clip)": (n_fft // 2 + 1)
        / clip_seconds
    }
    if settings["f_max"] is not None:
        bands = "mel bands" if settings["frontend"] != "stft" else "STFT bins"
        needs[f"{bands} up to f_max = {settings['f_max']:g} Hz"] = 2 * settings["f_max"]
    return needs


def check_sample_rate(recipe: Recipe, args: dict) -> None:
    """Refuse `data.sample_rate` for a model whose rate is fixed (the pretrained backbones), and a
    rate too low for a baseline's front end (`frontend_needs`), naming the key that sets it:
    data.sample_rate, else model.args.sample_rate (or its default)."""
    name = recipe.model.name
    options = MODEL_OPTIONS[name]
    if recipe.data.sample_rate is not None and "sample_rate" not in options.parameters:
        raise RecipeError(
            f"data.sample_rate: model {name!r} has a fixed rate (its feature extractor's); "
            "unset it (data.sample_rate=null)"
        )
    if not options.log_mel:
        return
    settings = {key: args.get(key, options.default(key)) for key in FRONTEND_SETTINGS}
    if recipe.data.sample_rate is not None:
        key, rate = "data.sample_rate", recipe.data.sample_rate
    else:
        key, rate = "model.args.sample_rate", settings["sample_rate"]
    frontend = "log-mel" if settings["frontend"] == "mel" else settings["frontend"]
    for need, lowest in frontend_needs(settings, recipe.data.clip_seconds).items():
        if rate < lowest:
            raise RecipeError(
                f"{key}: {rate} Hz is too low for the {frontend} front end of model {name!r}: "
                f"it needs at least {math.ceil(lowest)} Hz for {need}"
            )


def check_frontend(recipe: Recipe, args: dict) -> None:
    """Refuse a front end other than the one `backbone.path`'s weights were trained with: Won et al.'s
    are mel; a saved folder's is in its config."""
    frontend, path = args.get("frontend"), recipe.backbone.path
    if frontend is None or path is None:
        return
    from baselines.loading import saved_frontend  # torch: only for a recipe that sets both

    saved = saved_frontend(path)
    if saved is not None and saved != frontend:
        raise RecipeError(
            f"model.args.frontend: {frontend} was asked, but backbone.path {path} was trained with "
            f"the {saved} front end; its weights fix it (drop model.args.frontend or start from scratch)"
        )


def check_baseline_backbone(recipe: Recipe) -> None:
    """Baselines start fresh or from a local file, and train fully or as a frozen probe (a head
    fitted on their cached embeddings); LoRA and layer-wise decay are for the pretrained backbones."""
    mode, name, path = recipe.backbone.mode, recipe.model.name, recipe.backbone.path
    if path is not None and not Path(path).exists():
        raise RecipeError(
            f"backbone.path: {path} does not exist; a baseline starts from a local Won et "
            "al. .pth file or an exported model folder (backbone.path=null: from scratch)"
        )
    if mode == "lora":
        raise RecipeError(
            f"backbone.mode: lora applies to the pretrained backbones "
            f"({listed(names_of('backbone') + names_of('auto'))}), not to baseline {name!r}; "
            "use full or probe"
        )
    if recipe.backbone.head_init == "probe" and path is None:
        raise RecipeError(
            f"backbone.head_init=probe: baseline {name!r} starts from scratch here; it needs "
            "pretrained weights (backbone.path=<Won et al. .pth or exported folder>)"
        )
    if recipe.train.layer_decay != 1:
        raise RecipeError(
            f"train.layer_decay: layer-wise decay is for the pretrained transformer backbones "
            f"({listed(names_of('backbone'))}), not baseline {name!r}; use train.head_lr"
        )
    if mode == "probe" and recipe.probe.layers != "last":
        raise RecipeError(
            f"probe.layers: baseline {name!r} is probed on its embedding only; "
            "the layer sweep is for the pretrained backbones (use probe.layers=last)"
        )
    if recipe.backbone.tags is not None:  # a Won et al. checkpoint's vocabulary: the baselines' (torch) side
        from baselines.loading import is_won_checkpoint, won_vocabulary

        if not is_won_checkpoint(path):
            raise RecipeError(
                f"backbone.tags: names the head vocabulary of a Won et al. .pth checkpoint; "
                f"backbone.path={path} is not one (set backbone.tags=null)"
            )
        won_vocabulary(recipe.backbone.tags)  # a vocabulary name or a readable file


def check_auto_backbone(recipe: Recipe) -> None:
    """`model.name=auto` reads everything from the checkpoint, so it needs one."""
    if recipe.backbone.path is None:
        raise RecipeError(
            "backbone.path: model.name=auto builds the checkpoint it names; set a Hub id "
            "(e.g. microsoft/wavlm-base-plus) or a local folder"
        )


# TrainingArguments that a recipe key sets: train.trainer_args refuses them, naming the key to use.
RECIPE_SETS = {
    "output_dir": "output_dir",
    "seed": "seed",
    "num_train_epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "warmup_steps": "train.warmup_ratio",
    "warmup_ratio": "train.warmup_ratio",  # transformers 4's name
    "lr_scheduler_type": "train.scheduler",
    "lr_scheduler_kwargs": "train.plateau_patience and train.plateau_factor",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_grad_norm": "train.max_grad_norm",
    "fp16": "train.precision",
    "bf16": "train.precision",
    "eval_strategy": "train.eval_steps",
    "eval_steps": "train.eval_steps",
    "save_strategy": "train.save_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "metric_for_best_model": "train.metric",
    "greater_is_better": "train.metric",
    "logging_strategy": "train.logging_steps",
    "logging_steps": "train.logging_steps",
    "resume_from_checkpoint": "train.resume",
    "dataloader_num_workers": "data.num_workers",
    "dataloader_persistent_workers": "data.persistent_workers",
    "dataloader_pin_memory": "data.pin_memory",
}
# TrainingArguments the toolkit's own code relies on: refused, with the reason.
FINETUNE_SETS = {
    "label_names": "the names under which evaluation gathers labels and track indices",
    "remove_unused_columns": "false: the collator reads columns the model does not take",
    "load_best_model_at_end": "true: the run keeps its best checkpoint (train.metric picks it)",
}
REPORTER_PACKAGES = {
    "azure_ml": "azureml-core",
    "comet_ml": "comet-ml",
    "flyte": "flytekit",
}  # pip name, where it differs
PLAIN_TYPES = (bool, int, float, str, dict, type(None))
# Fields whose annotation is narrower than what TrainingArguments takes (transformers 5.x annotates
# fsdp as str | None, yet wants fsdp=True and deprecates the strings).
FIELD_TYPES = {"fsdp": bool | str | None}


def installed_reporters() -> set[str]:
    """The report_to integrations whose package is installed here."""
    from transformers.integrations import get_available_reporting_integrations, is_flytekit_available

    return set(get_available_reporting_integrations()) | ({"flyte"} if is_flytekit_available() else set())


def check_trainer_arg_name(name: str, fields: list[str]) -> None:
    """Raise RecipeError unless train.trainer_args may set the TrainingArguments field `name`."""
    key = f"train.trainer_args.{name}"
    if name in RECIPE_SETS:
        raise RecipeError(f"{key}: set {RECIPE_SETS[name]} instead")
    if name in FINETUNE_SETS:
        raise RecipeError(f"{key}: finetune sets it ({FINETUNE_SETS[name]})")
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
        hint = f"; did you mean {RECIPE_SETS.get(close[0], f'train.trainer_args.{close[0]}')}?" if close else ""
        raise RecipeError(f"{key}: not a transformers.TrainingArguments field{hint}")


def is_plain(tp) -> bool:
    """True when `coerce` can check a value against the annotation `tp` (unions and lists of plain types)."""
    if tp in PLAIN_TYPES:
        return True
    origin = typing.get_origin(tp)
    return origin in (typing.Union, types.UnionType, list) and all(map(is_plain, typing.get_args(tp)))


def trainer_arg_value(key: str, value, tp):
    """`value` as the field's annotation `tp` wants it: plain types converted (YAML 1.1 reads 1e-8 as a
    string), an enumerated field's choices (optim, hub_strategy ...) checked; other values as given."""
    if is_plain(tp):
        return coerce(value, tp, key)
    choices = next((arg for arg in typing.get_args(tp) if isinstance(arg, type) and issubclass(arg, Enum)), None)
    values = [choice.value for choice in choices or ()]
    if choices is not None and str(value) not in values:
        close = difflib.get_close_matches(str(value), values, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise RecipeError(f"{key}: {value!r} is not a choice; {hint}(choices: {', '.join(values)})")
    return value


def check_report_to(value) -> None:
    """Raise RecipeError for a report_to integration transformers does not know or whose package is
    not installed."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    installed = installed_reporters()
    for name in [value] if isinstance(value, str) else value or []:
        if name in ("all", "none"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(
                f"train.trainer_args.report_to: {name!r} is not one of all, none, {', '.join(INTEGRATION_TO_CALLBACK)}"
            )
        if name not in installed:
            raise RecipeError(
                f"train.trainer_args.report_to: {name} is not installed; "
                f"pip install {REPORTER_PACKAGES.get(name, name)}"
            )


def check_trainer_args(recipe: Recipe) -> dict:
    """`train.trainer_args` checked against transformers.TrainingArguments and converted to its field
    types, before anything heavy runs. Refused, naming the key: a name that is no field (with the
    closest one), a field a recipe key sets (with that key) or that the toolkit relies on, a value of
    the wrong type or outside the field's choices, a report_to integration that is not installed."""
    if not recipe.train.trainer_args:  # nothing to check: transformers stays unimported
        return {}
    from transformers import TrainingArguments

    fields = [field.name for field in dataclasses.fields(TrainingArguments) if field.init]
    hints = {**typing.get_type_hints(TrainingArguments), **FIELD_TYPES}
    checked = {}
    for name, value in recipe.train.trainer_args.items():
        check_trainer_arg_name(name, fields)
        checked[name] = trainer_arg_value(f"train.trainer_args.{name}", value, hints[name])
    if "report_to" in checked:
        check_report_to(checked["report_to"])
    return checked
