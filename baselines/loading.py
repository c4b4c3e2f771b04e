"""Builder glue: start a baseline fresh, from a saved folder or from Won et al.'s tagger weights."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import PreTrainedConfig, Wav2Vec2FeatureExtractor

from baselines.common import BaselineConfig, BaselinePreTrainedModel
from baselines.msd_tags import MSD_TAGS
from baselines.mtat_tags import MTAT_TAGS
from finetune.bundle import EVERY_BUILDER_ARGS, ModelBundle, label_config
from finetune.data.jamendo import subset_tags
from finetune.recipe import RecipeError

# `backbone.tags` names -> the tags of a Won et al. checkpoint's output units, in order. Their
# MTG-Jamendo loader binarizes the top-50 tags with scikit-learn's LabelBinarizer, which sorts them:
# the published top-50 list, alphabetical, as our loader orders it.
WON_VOCABULARIES = {"mtat": MTAT_TAGS, "msd": MSD_TAGS, "jamendo": tuple(subset_tags("top50tags"))}

WON_FRONTEND_RENAMES = (
    ("spec.spectrogram.", "frontend.transform."),
    ("spec.mel_scale.", "frontend.transform."),
    ("spec_bn.", "frontend.norm."),
)


def rename_won_keys(state: dict, renames: tuple[tuple[str, str], ...]) -> dict:
    """Rename each key by the first matching prefix in ``WON_FRONTEND_RENAMES + renames``."""
    out = {}
    for key, value in state.items():
        for old, new in WON_FRONTEND_RENAMES + renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


# Folders saved before front ends were a setting hold the log-mel front end under its old name.
OLD_FRONTEND_PREFIX, FRONTEND_PREFIX = "frontend.logmel.", "frontend.transform."


def renamed_old_frontend(path: Path) -> dict | None:
    """The state dict of a folder saved before the front-end rename, its front end under today's name;
    None for any other folder (transformers' own key mapping would also rename it back on save)."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        return None
    with safe_open(str(weights), "pt") as saved:
        if not any(key.startswith(OLD_FRONTEND_PREFIX) for key in saved.keys()):
            return None
    return {
        FRONTEND_PREFIX + key.removeprefix(OLD_FRONTEND_PREFIX) if key.startswith(OLD_FRONTEND_PREFIX) else key: value
        for key, value in load_file(str(weights)).items()
    }


def load_saved(model_class: type[BaselinePreTrainedModel], path: Path) -> BaselinePreTrainedModel:
    """A baseline's ``save_pretrained`` folder, in eval mode; one saved before the front-end rename is
    loaded strictly under the new names."""
    state = renamed_old_frontend(path)
    if state is None:
        return model_class.from_pretrained(path)
    model = model_class(model_class.config_class.from_pretrained(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def is_won_checkpoint(path: str | Path | None) -> bool:
    """True for a Won et al. weights file (``.pth`` / ``.pt``), which ``start_model`` imports."""
    return path is not None and Path(path).suffix in (".pth", ".pt")


def saved_frontend(path: str | Path) -> str | None:
    """The front end that the weights at ``path`` were trained with: mel for a Won et al. checkpoint,
    a saved spectrogram baseline's ``frontend`` (mel when its config predates the setting), None for
    anything else."""
    if is_won_checkpoint(path):
        return "mel"
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    saved = json.loads(config.read_text())
    return saved.get("frontend", "mel") if "n_mels" in saved else None


def won_vocabulary(tags: str | None) -> list[str]:
    """The tags of a Won et al. checkpoint's output units, in order, from ``backbone.tags``: mtat
    (also when None), msd, jamendo, or a file with one tag per line."""
    if tags is None or tags in WON_VOCABULARIES:
        return list(WON_VOCABULARIES[tags or "mtat"])
    if not Path(tags).is_file():
        raise RecipeError(
            f"backbone.tags: {tags!r} is not {', '.join(WON_VOCABULARIES)} or a file "
            "(one tag per line, in the checkpoint's output order)"
        )
    names = [line.strip() for line in Path(tags).read_text().splitlines() if line.strip()]
    repeated = [name for i, name in enumerate(names) if name in names[:i]]
    if repeated:
        raise RecipeError(f"backbone.tags: {tags} lists {repeated[0]!r} more than once")
    return names


def import_won_checkpoint(
    model_class: type[BaselinePreTrainedModel],
    path: str | Path,
    config: BaselineConfig | None = None,
    tags: str | None = None,
) -> BaselinePreTrainedModel:
    """``model_class`` with Won et al.'s ``best_model.pth`` loaded strictly, labelled with its
    head's vocabulary ``tags`` (``backbone.tags``: mtat, msd, jamendo or a file; None = mtat).

    Every tensor, front end included, must map onto the model and every model tensor must come
    from the file (``load_state_dict(strict=True)`` raises otherwise); the vocabulary must have one
    tag per output unit. ``config`` defaults to the published architecture; the model is returned
    in eval mode.
    """
    if not model_class.won_renames:
        raise ValueError(f"{model_class.__name__} has no Won et al. checkpoint to import")
    if config is not None and (config.frontend, config.frontend_norm) != ("mel", "batch"):
        raise RecipeError(
            f"model.args.frontend: {path} holds Won et al. weights trained on the mel front end "
            f"with batch norm, not {config.frontend} with {config.frontend_norm} norm"
        )
    vocabulary = won_vocabulary(tags)
    state = rename_won_keys(torch.load(path, weights_only=True, map_location="cpu"), model_class.won_renames)
    head = state.get("classifier.bias")
    if head is not None and len(head) != len(vocabulary):
        raise RecipeError(
            f"backbone.tags: {tags or 'mtat'} has {len(vocabulary)} tags but the head of {path} "
            f"has {len(head)} outputs; name the vocabulary the checkpoint was trained on"
        )
    config = config if config is not None else model_class.config_class()
    config.update(label_config(vocabulary, multi_label=True))
    model = model_class(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def start_model(
    model_class: type[BaselinePreTrainedModel],
    config: BaselineConfig,
    path: str | Path | None,
    tags: str | None = None,
) -> BaselinePreTrainedModel:
    """A fresh model (path None), a ``save_pretrained`` folder, or a Won et al. ``.pth`` file
    (whose head's vocabulary is ``tags``)."""
    if path is None:
        return model_class(config)
    path = Path(path)
    if is_won_checkpoint(path):
        return import_won_checkpoint(model_class, path, config, tags)
    if not (path / "config.json").is_file():
        raise ValueError(f"backbone.path {path} is neither a .pth file nor a saved model folder")
    saved_type = json.loads((path / "config.json").read_text())["model_type"]
    if saved_type != model_class.config_class.model_type:
        raise ValueError(f"{path} holds a {saved_type!r} model, not {model_class.config_class.model_type!r}")
    return load_saved(model_class, path)


def build_baseline(model_class: type[BaselinePreTrainedModel], args: dict):
    """The ``ModelBundle`` for a builder's bound arguments.

    The toolkit arguments (``num_labels``, ``label_names``, ``multi_label``, ``backbone``) pick the
    labels and the starting point; every other argument is a field of the model's config. With
    ``backbone.path`` a saved folder, the saved architecture wins over those fields; with a
    ``.pth`` file they must describe Won et al.'s architecture, and ``backbone.tags`` names its
    head's vocabulary (recorded for the model card in ``config.won_head``). The head is then
    reordered or replaced to match ``label_names``.
    """
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    num_labels, label_names = fields.pop("num_labels"), list(fields.pop("label_names"))
    multi_label, backbone = fields.pop("multi_label"), fields.pop("backbone")
    if num_labels != len(label_names):
        raise ValueError(f"num_labels={num_labels} but {len(label_names)} label names")
    config = model_class.config_class(**fields)
    config.update(label_config(label_names, multi_label))
    path, tags = getattr(backbone, "path", None), getattr(backbone, "tags", None)
    model = start_model(model_class, config, path, tags)
    if is_won_checkpoint(path):
        same = sorted(model.config.id2label.values()) == sorted(label_names)
        model.config.won_head = {"tags": tags or "mtat", "same_labels": same}
    model.set_labels(label_names, multi_label)
    sample_rate = model.config.sample_rate
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sample_rate,
        padding_value=0.0,
        do_normalize=False,
        return_attention_mask=False,
    )
    return ModelBundle(model=model, feature_extractor=feature_extractor, sample_rate=sample_rate)


def make_builder(model_class: type[BaselinePreTrainedModel]):
    """The recipe builder of ``model_class``.

    Its signature is ``(num_labels, label_names, multi_label, backbone, *, <field>=<default>...)``
    with one keyword argument per field the model's config adds to transformers' own, so the
    config class is the one place that lists and documents a model's options.
    """
    config_class = model_class.config_class
    inherited = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    signature = inspect.Signature(
        [inspect.Parameter(name, positional) for name in EVERY_BUILDER_ARGS]
        + [
            inspect.Parameter(field.name, keyword, default=field.default, annotation=field.type)
            for field in dataclasses.fields(config_class)
            if field.name not in inherited
        ]
    )

    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)  # TypeError naming an unknown or missing argument
        bound.apply_defaults()
        return build_baseline(model_class, bound.arguments)

    build.__signature__ = signature
    build.__name__ = build.__qualname__ = "build"
    build.__module__ = model_class.__module__
    summary = (sys.modules[model_class.__module__].__doc__ or model_class.__name__).strip().splitlines()[0]
    build.__doc__ = f"{summary}\n\nThe keyword arguments are the fields of {config_class.__name__}."
    return build
