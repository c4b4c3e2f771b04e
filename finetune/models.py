"""The model registry: one explicit dict from recipe `model.name` to a builder function."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from finetune.recipe import Recipe, RecipeError

# Builder parameters filled by the toolkit, never by `model.args`; `lora` and `probe` only go to
# builders that declare them.
TOOLKIT_ARGS = ("num_labels", "label_names", "multi_label", "backbone", "lora", "probe")


@dataclass
class ModelBundle:
    """A model with the feature extractor that turns waveforms at `sample_rate` into its inputs."""

    model: Any  # transformers.PreTrainedModel
    feature_extractor: Any  # transformers feature extractor
    sample_rate: int


def model_builders() -> dict[str, Callable[..., ModelBundle]]:
    """Every model name a recipe can use -> its builder."""
    from baselines import BASELINE_BUILDERS
    from finetune.backbones import BACKBONE_BUILDERS

    return {**BASELINE_BUILDERS, **BACKBONE_BUILDERS}


def check_model_args(recipe: Recipe) -> None:
    """Fail fast when `model.name` or `model.args` do not fit the builder's signature."""
    builders = model_builders()
    name = recipe.model.name
    if name not in builders:
        raise RecipeError(f"model.name: {name!r} is not one of {', '.join(sorted(builders))}")
    params = inspect.signature(builders[name]).parameters
    accepted = [p for p in params if p not in TOOLKIT_ARGS]
    for key in recipe.model.args:
        if key not in accepted:
            raise RecipeError(
                f"unknown key model.args.{key} for model {name!r}; valid: {', '.join(accepted)}"
            )


def build_model(recipe: Recipe, label_names: list[str], multi_label: bool) -> ModelBundle:
    """Build the recipe's model for a task with these labels."""
    check_model_args(recipe)
    args = dict(recipe.model.args)
    builder = model_builders()[recipe.model.name]
    params = inspect.signature(builder).parameters
    if recipe.data.sample_rate is not None:
        if "sample_rate" not in params:
            raise RecipeError(f"data.sample_rate: model {recipe.model.name!r} has a fixed rate")
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


def load_model(path: str | Path) -> ModelBundle:
    """Load a saved model folder (ours or a transformers audio classifier) with its extractor."""
    import baselines  # noqa: F401  registers the baseline classes with the Auto classes
    import finetune.backbones  # noqa: F401  registers the attention-pooling / AST subclasses
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model folder (no config.json)")
    model = AutoModelForAudioClassification.from_pretrained(path)
    extractor = AutoFeatureExtractor.from_pretrained(path)
    return ModelBundle(model=model.eval(), feature_extractor=extractor,
                       sample_rate=int(extractor.sampling_rate))


def adapter_only(model):
    """The LoRA adapters and heads alone as a peft model (for `export --adapter-only`), or None
    when the model has no adapters or carries layer weights an adapter cannot hold."""
    from finetune.backbones.lora import adapter_model, lora_layers

    if not lora_layers(model) or getattr(model.config, "use_weighted_layer_sum", False):
        return None
    return adapter_model(model)


def export_model(model, recipe: Recipe):
    """The model as it is saved into the run folder: LoRA adapters merged when the recipe says so."""
    from finetune.backbones.lora import export_ready

    return export_ready(model, recipe.lora)
