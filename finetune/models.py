"""The model registry: one explicit dict from recipe `model.name` to a builder function."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

from baselines import BASELINE_BUILDERS, MODEL_CLASSES  # importing registers the baseline classes with the Auto classes
from baselines.common import FRONTEND_NORMS, SpectrogramConfig
from baselines.loading import load_saved
from finetune.backbones import AUTO, BACKBONE_BUILDERS  # ... and the finetune_* backbone subclasses
from finetune.backbones.auto import build_auto
from finetune.backbones.heads import base_model_name
from finetune.backbones.lora import export_ready, lora_layers, save_adapter
from finetune.backbones.plugin import EncoderConfig, build_encoder, load_encoder_model
from finetune.bundle import ModelBundle
from finetune.checks import check_model_args
from finetune.features import FRONTENDS
from finetune.model_options import OPTIONS_FILE, ModelOptions, options_of, to_json
from finetune.recipe import ENCODER, Recipe

MODEL_BUILDERS: dict[str, Callable[..., ModelBundle]] = {
    **BASELINE_BUILDERS,
    **BACKBONE_BUILDERS,
    AUTO: build_auto,
    ENCODER: build_encoder,
}
# A spectrogram baseline's arguments whose values are a registry's names (checked without torch).
FRONTEND_CHOICES = {"frontend": list(FRONTENDS), "frontend_norm": list(FRONTEND_NORMS)}


def model_builders() -> dict[str, Callable[..., ModelBundle]]:
    """Every model name a recipe can use -> its builder."""
    return MODEL_BUILDERS


def model_options() -> dict[str, ModelOptions]:
    """Every model name -> its builder's options, read off the builders (what `model_options.json`
    must hold: `finetune.model_options` reads it there without importing torch)."""

    def kind(name: str) -> str:
        return "baseline" if name in BASELINE_BUILDERS else "auto" if name == AUTO else "backbone"

    def spectrogram(name: str) -> bool:
        return name in MODEL_CLASSES and issubclass(MODEL_CLASSES[name].config_class, SpectrogramConfig)

    return {
        name: options_of(builder, kind(name), spectrogram(name), FRONTEND_CHOICES if spectrogram(name) else None)
        for name, builder in MODEL_BUILDERS.items()
    }


def write_model_options() -> None:
    """Rewrite `finetune/model_options.json` from the builders (after adding or changing a model)."""
    OPTIONS_FILE.write_text(to_json(model_options()))


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


# a saved config's model_type -> its baseline class (load_model loads baselines through baselines.loading)
BASELINE_CLASSES = {model.config_class.model_type: model for model in MODEL_CLASSES.values()}
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
        raise ValueError(
            f"{path} is a training checkpoint, not a model folder: pass the run folder "
            f"{path.parent} (its model/ holds the trained model)"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a run folder (with model/) nor a model folder (with config.json)")
    check_model_files(path)


def described_model(path: Path, baseline):
    """The model that `path`'s config.json describes (a `baseline` class, else a transformers one),
    without weights: on the meta device, so building it costs no memory."""
    with torch.device("meta"):
        if baseline:
            return baseline(baseline.config_class.from_pretrained(path))
        return AutoModelForAudioClassification.from_config(AutoConfig.from_pretrained(path))


def saved_label_count(path: Path, model) -> int | None:
    """How many labels the weights in `path` were saved for, where `model` (built from the config)
    expects another count: the first dimension of a saved weight whose shape differs from the model's
    there alone, where the model's is its label count; None when no weight says so."""
    labels, expected = model.config.num_labels, {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            for name in weights.keys():
                shape, wanted = tuple(weights.get_slice(name).get_shape()), expected.get(name)
                if wanted and wanted[0] == labels and shape[1:] == wanted[1:] and shape[0] != labels:
                    return shape[0]
    return None


def weights_mismatch(path: Path, baseline, err: RuntimeError) -> ValueError:
    """The error for weights whose shapes the config does not describe: the label counts where
    they differ (a config.json edited, or taken from another model), else the library's words."""
    model = described_model(path, baseline)
    saved = saved_label_count(path, model)
    found = (
        f"config.json has {model.config.num_labels} labels, the weights {saved}"
        if saved is not None
        else f"the weights do not fit config.json ({str(err).splitlines()[0]})"
    )
    return ValueError(
        f"{path}: {found}: restore the config.json saved with these weights (its id2label names every label)"
    )


def load_transformers_model(path: Path, model_type: str | None):
    """A saved transformers-style model: a plug-in encoder's built again by its factory, the rest
    by transformers."""
    if model_type == EncoderConfig.model_type:
        return load_encoder_model(path)
    return AutoModelForAudioClassification.from_pretrained(path)


def load_model(path: str | Path) -> ModelBundle:
    """Load a saved model folder (ours or a transformers audio classifier) with its extractor; a
    folder that cannot be loaded is a ValueError or OSError naming it and why."""
    path = Path(path)
    check_model_folder(path)
    try:
        model_type = read_json(path / "config.json").get("model_type")
        baseline = BASELINE_CLASSES.get(model_type)
        model = load_saved(baseline, path) if baseline else load_transformers_model(path, model_type)
        extractor = AutoFeatureExtractor.from_pretrained(path)
    except (OSError, ValueError) as err:  # a missing weights or preprocessor file, an unknown model type
        raise ValueError(f"{path}: cannot load the model ({err})") from err
    except RuntimeError as err:  # weights of other shapes than config.json describes
        raise weights_mismatch(path, baseline, err) from err
    return ModelBundle(model=model.eval(), feature_extractor=extractor, sample_rate=int(extractor.sampling_rate))


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


if __name__ == "__main__":  # python -m finetune.models: refresh model_options.json
    write_model_options()
