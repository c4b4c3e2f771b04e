"""Hub-ready export (weights, config, preprocessor, model card) and upload with huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from baselines.loading import is_won_checkpoint
from finetune import __version__
from finetune.atomic import staged_folder
from finetune.backbones import FAMILIES
from finetune.backbones.lora import OWN_PARAMETERS_FILE
from finetune.backbones.plugin import requirement
from finetune.data import DATASET_CARDS
from finetune.leakage import KEY as LEAKAGE_KEY, leakage_text
from finetune.metrics import Metric, metrics_for
from finetune.models import check_model_files, read_json
from finetune.published import partial_test_split
from finetune.recipe import Recipe, load
from finetune.rundir import read_identity

HUB_LIBRARY = {True: "transformers", False: "finetune"}  # native transformers class or ours
PIPELINE_TAG = "audio-classification"  # the Hub's task of every model the toolkit writes
# Licences of the named backbone families' published weights (Hub id prefix -> SPDX-like id).
BASE_LICENSES = {family.license_prefix: family.license for family in FAMILIES.values() if family.license_prefix}
WON_LICENSE = "mit"  # Won et al.'s sota-music-tagging-models weights
WON_VOCABULARY_NAMES = {
    "mtat": "the MagnaTagATune top-50 tags",
    "msd": "the Million Song Dataset top-50 tags",
    "jamendo": "the MTG-Jamendo top-50 tags",
}
TOOLKIT_LICENSE = "mit"  # a model trained from scratch by this toolkit
EXPORT_MARKER = "finetune_export.json"  # in every export: which run it came from (its run.json id)


class HubError(RuntimeError):
    """An upload that did not go through; the local export is left as it is."""


def is_native(config: dict) -> bool:
    """True when transformers alone loads the folder (no finetune code needed)."""
    return not config.get("model_type", "").startswith("finetune_")


def card_metrics(metrics: dict) -> list[Metric]:
    """The registered summary metrics (`finetune.metrics`) that the test `metrics` hold: the card's."""
    return [m for m in metrics_for() if m.summary and m.name in metrics]


def results_rows(metrics: dict) -> str:
    """The card's markdown table rows: one per card metric the run has."""
    return "\n".join(f"| {m.label} | {metrics[m.name]:.4f} |" for m in card_metrics(metrics))


def dataset_id(data) -> str:
    """The card's dataset id: the named dataset's, a Hub dataset's own id (`data.path`), or the
    basename of a local folder or dataset (never the user's full path)."""
    if DATASET_CARDS[data.name]:
        return DATASET_CARDS[data.name].id
    source = data.path if data.name == "hub" else data.root
    if data.name == "hub" and not Path(source).expanduser().exists():
        return source  # a Hub id, e.g. user/name
    return Path(source).expanduser().resolve().name


def dataset_name(data) -> str:
    """The dataset as the card's prose names it."""
    if DATASET_CARDS[data.name]:
        return DATASET_CARDS[data.name].name + (f" {data.subset}" if data.subset else "")
    kind = "a folder of audio" if data.name == "folder" else "the dataset"
    return f"{kind} `{dataset_id(data)}`"


def reported_metrics(metrics: dict) -> list[Metric]:
    """Every registered score (not a count) that the test `metrics` hold with a finite value: the
    results of the card's model-index."""
    return [
        m
        for m in metrics_for()
        if m.higher_is_better is not None
        and isinstance(metrics.get(m.name), (int, float))
        and math.isfinite(metrics[m.name])
    ]


def split_args(recipe: Recipe, metrics: dict) -> dict:
    """The test split as the model-index states it: its scheme, the cross-validation fold, and how
    much of a published split the run scored when not all of it."""
    data = recipe.data
    args = {"split_scheme": data.split_scheme or "standard"}
    if data.folds:
        args["cross_validation"] = f"{data.folds}-fold, fold {data.fold}"
    partial = partial_test_split(recipe, metrics)
    if partial:
        args["partial"] = partial
    return args


def eval_results(recipe: Recipe, metrics: dict) -> list[EvalResult]:
    """The run's test results as huggingface_hub's model-index entries: one per reported metric."""
    data, args = recipe.data, split_args(recipe, metrics)
    return [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name=PIPELINE_TAG.replace("-", " "),
            dataset_type=dataset_id(data),
            dataset_name=data.name,
            dataset_config=data.subset or None,
            dataset_split="test",
            dataset_args=args,
            metric_type=m.name,
            metric_name=m.label,
            metric_value=float(metrics[m.name]),
        )
        for m in reported_metrics(metrics)
    ]


def card_data(recipe: Recipe, metrics: dict, library: str, tags: Sequence[str]) -> ModelCardData:
    """The metadata a Hub model page reads (library, licence, base model, task, tags, dataset and
    the model-index of the test results), as huggingface_hub's card data."""
    results = eval_results(recipe, metrics)
    return ModelCardData(
        library_name=library,
        license=license_of(recipe),
        base_model=hub_base_model(recipe),
        pipeline_tag=PIPELINE_TAG,
        tags=["audio", "music", *tags, "finetune", recipe.model.name],
        datasets=[dataset_id(recipe.data)],
        metrics=[r.metric_type for r in results] or None,
        model_name=recipe.name,
        eval_results=results or None,
    )


def card_text(data: ModelCardData, body: str) -> str:
    """README.md: the metadata as huggingface_hub writes it, then the markdown body; read back by
    `ModelCard` first, so metadata the library would refuse is never written."""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def software_section(lines: Sequence[str]) -> str:
    """The card's list of the software that made the model beyond the recipe (a plug-in encoder's
    package and version; the toolkit's own version belongs here too); empty without lines."""
    return "## Software\n" + "".join(f"- {line}\n" for line in lines) + "\n" if lines else ""


def partial_split_line(recipe: Recipe, metrics: dict) -> str:
    """The card's note on a run tested on part of its published test split (empty otherwise)."""
    partial = partial_test_split(recipe, metrics)
    return f"\n- test: {partial}, so these scores are not comparable with published ones" if partial else ""


def threshold_line(config: dict) -> str:
    """The card's note on a tagging model's tuned per-tag thresholds (empty without them)."""
    values = config.get("tag_thresholds")
    if not values:
        return ""
    return (
        f"\n- decision thresholds: one per tag in `config.json` `tag_thresholds` (aligned with "
        f"id2label; range {min(values):.3f}-{max(values):.3f}), each maximising that tag's F1 on "
        f"the validation split (0.5 for tags without validation positives)"
    )


def hub_base_model(recipe: Recipe) -> str | None:
    """The pretrained weights as a Hub id (`org/name`), None for a local path or from scratch."""
    path = recipe.backbone.path
    if not path or Path(path).exists() or is_won_checkpoint(path) or path.count("/") != 1:
        return None
    return path


def license_of(recipe: Recipe) -> str:
    """The licence that governs the weights: the pretrained checkpoint's, or the toolkit's."""
    path = recipe.backbone.path
    if not path:
        return TOOLKIT_LICENSE
    if is_won_checkpoint(path):
        return WON_LICENSE
    return next((value for prefix, value in BASE_LICENSES.items() if path.startswith(prefix)), "other")


def what_was_trained(recipe: Recipe, multi_label: bool, labels: int) -> str:
    """One sentence from the resolved recipe: the model, how it trained, on which data and task."""
    data, backbone = recipe.data, recipe.backbone
    how = {
        "full": "fine-tuned (every weight)",
        "lora": f"fine-tuned with LoRA adapters (rank {recipe.lora.r})",
        "probe": "kept frozen, with a head fitted on its embeddings (probe)",
    }[backbone.mode]
    if backbone.head_init == "probe" and backbone.mode != "probe":
        how = f"{how}, starting from a head fitted by a linear probe"
    model = (
        f"`{recipe.model.name}` from {backbone.path}, {how},"
        if backbone.path
        else f"`{recipe.model.name}` trained from scratch"
    )
    dataset = dataset_name(data)
    split = (
        f"{data.folds}-fold cross-validation, fold {data.fold}"
        if data.folds
        else f"split {data.split_scheme or 'standard'}"
    )
    task = f"music tagging ({labels} tags)" if multi_label else f"music genre classification ({labels} genres)"
    return f"{model} for {task} on {dataset} ({split})."


def won_head_line(recipe: Recipe, config: dict) -> str:
    """The card's sentence on a model imported from a Won et al. checkpoint (`config.won_head`): the
    tag vocabulary of the checkpoint's head and what became of that head; empty for other starts."""
    head = config.get("won_head")
    if not head or not is_won_checkpoint(recipe.backbone.path):
        return ""
    tags = WON_VOCABULARY_NAMES.get(head["tags"], f"the tags listed in `{Path(head['tags']).name}`")
    if not head["same_labels"]:
        fate = "that head was replaced for this task's labels"
    elif "probe" in (recipe.backbone.mode, recipe.backbone.head_init):
        fate = "that head was refitted by a linear probe on the same tags"
    else:
        fate = "that head was kept for the same tags"
    return f" It started from a Won et al. checkpoint whose head used {tags}; {fate}."


def artist_line(metrics: dict) -> str:
    """The card's line on the test split's artist leak ('' for a run that did not record it)."""
    leak = leakage_text(metrics.get(LEAKAGE_KEY))
    return f"\n- {leak}" if leak else ""


def model_card(recipe: Recipe, metrics: dict, config: dict, software: Sequence[str] = ()) -> str:
    """README.md for the Hub: metadata (`card_data`), then what was trained (from the resolved
    recipe), the `software` lines, data, results, usage and limits."""
    native = is_native(config)
    labels = [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    multi = config.get("problem_type") == "multi_label_classification"
    clip, hop = config.get("clip_seconds", recipe.data.clip_seconds), config.get("hop_seconds")
    windows = f"{clip:g} s windows every {hop or clip:g} s, {config.get('aggregate', 'mean')} over the windows"
    toolkit = (
        "```python\nfrom finetune.predict import Predictor  # pip install music-finetune\n\n"
        'Predictor.from_pretrained("PATH").predict("song.mp3")\n```\n\n'
        f"`Predictor` and `python -m finetune predict` score a file as the results below were "
        f"computed: {windows}."
    )
    if native:
        usage = (
            "```python\nfrom transformers import pipeline\n\n"
            'classifier = pipeline("audio-classification", model="PATH_OR_REPO")\n'
            'classifier("song.mp3")\n```\n\n'
            "`transformers.pipeline` scores a file in one pass of its feature extractor (which pads "
            "or cuts it to the model's input); with the finetune toolkit it is scored in the run's "
            f"windows instead:\n\n{toolkit}"
        )
    else:
        usage = f"This model is one of finetune's baselines (model type `{config.get('model_type')}`); load it with the toolkit:\n\n{toolkit}"
    body = f"""# {recipe.name}

{what_was_trained(recipe, multi, len(labels))}{won_head_line(recipe, config)}

Trained with the finetune toolkit's recipe `{recipe.name}`; the resolved recipe is in
`recipe.yaml` (`python -m finetune --recipe recipe.yaml` runs it again). Licence of the weights:
{license_of(recipe)} (the pretrained checkpoint's where there is one); the training data keeps its own terms.

{software_section(software)}## Data
- dataset: {dataset_name(recipe.data)} (`data.name={recipe.data.name}`), split: {recipe.data.split_scheme or "standard"}
- {"multi-label tagging" if multi else "single-label classification"} over {len(labels)} labels: {", ".join(labels[:20])}{" ..." if len(labels) > 20 else ""}
- input: {windows}{threshold_line(config)}{partial_split_line(recipe, metrics)}{artist_line(metrics)}

## Results (test split, track level)

| metric | value |
|---|---|
{results_rows(metrics)}

## Usage

{usage}

## Limits
Scores hold for the dataset and split above; audio from other sources (recording chains,
genres outside the label set, very short clips) can score lower. Check the run's report before
relying on a label.
"""
    tags = ["music-tagging" if multi else "music-genre-classification"]
    return card_text(card_data(recipe, metrics, HUB_LIBRARY[native], tags), body)


ADAPTER_USAGE = {
    False: """from peft import PeftModel
# base: {base} built for the same labels, e.g. with finetune's builder in full mode
model = PeftModel.from_pretrained(base, "PATH_OR_REPO")""",
    True: """from finetune.backbones.lora import load_adapter
# base: {base} built for the same labels and backbone.layer=weighted, e.g. with finetune's
# builder in full mode; load_adapter also restores the learned layer weights ({own_file})
model = load_adapter(base, "PATH")  # a local copy of this folder""",
}


def adapter_card(recipe: Recipe, metrics: dict, own_parameters: bool = False, software: Sequence[str] = ()) -> str:
    """README.md for a LoRA adapter folder; `own_parameters`: it carries OWN_PARAMETERS_FILE;
    `software`: as for `model_card`."""
    usage = ADAPTER_USAGE[own_parameters].format(base=recipe.backbone.path, own_file=OWN_PARAMETERS_FILE)
    return card_text(
        card_data(recipe, metrics, "peft", ["lora"]),
        f"""# {recipe.name} (LoRA adapter)

LoRA adapters (rank {recipe.lora.r}) and the classification head trained by the finetune toolkit's
recipe `{recipe.name}` on {recipe.data.name}. The merged model is the run's `model/` folder.

{software_section(software)}| metric (test) | value |
|---|---|
{results_rows(metrics)}

```python
{usage}
```
""",
    )


def write_card(
    folder: Path, recipe: Recipe, metrics: dict, adapter: bool = False, software: Sequence[str] = ()
) -> Path:
    """README.md into a model folder (its config.json names the labels) or, with `adapter`, a LoRA
    adapter folder; `software`: lines for the card's Software section (`software_section`), after
    the toolkit's version and, for a plug-in encoder, the package it needs."""
    software = [f"finetune {__version__}", *software]
    if adapter:
        card = adapter_card(recipe, metrics, (folder / OWN_PARAMETERS_FILE).is_file(), software)
    else:
        config = json.loads((folder / "config.json").read_text())
        needs = requirement(config)
        card = model_card(recipe, metrics, config, [*software, needs] if needs else software)
    path = folder / "README.md"
    path.write_text(card)
    return path


def run_identity(run_dir: Path) -> str:
    """What an export records of its run: the `id` in its run.json (it survives moving the folder),
    or, for a run written before run folders had one, a hash of the folder's absolute path (the path
    itself would be published with the export)."""
    recorded = read_identity(run_dir) or {}
    return recorded.get("id") or hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()


def exported_from(folder: Path) -> str | None:
    """The run identity an earlier export in `folder` recorded, None when it is not one."""
    try:
        return json.loads((folder / EXPORT_MARKER).read_text())["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_export_target(to: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse to write `to` over the run itself, or over a folder that holds anything but an
    earlier export of this run (unless `overwrite`)."""
    if run_dir.resolve().is_relative_to(to.resolve()) or to.resolve() in (
        (run_dir / "model").resolve(),
        (run_dir / "adapter").resolve(),
    ):
        raise FileExistsError(
            f"export: writing {to} would replace the run {run_dir} or its model; choose a folder outside the run"
        )
    if to.exists() and not to.is_dir():
        raise FileExistsError(f"export: {to} is a file; choose a folder")
    if overwrite or not to.exists() or not any(to.iterdir()) or exported_from(to) == run_identity(run_dir):
        return
    raise FileExistsError(
        f"export: {to} is not empty and is not an earlier export of {run_dir}; choose a new "
        "folder, or pass --overwrite to replace it (deleting what it holds)"
    )


def export_run(run_dir: str | Path, to: str | Path, adapter_only: bool = False, overwrite: bool = False) -> Path:
    """Copy a run's model (or, with `adapter_only`, its LoRA adapter) into a Hub-ready folder with
    a model card, the preprocessor config, the recipe and EXPORT_MARKER. `to` may be new, empty or
    an earlier export of the same run (replaced whole); `overwrite` replaces any folder. The export
    is written beside `to` and renamed into place, so a failure leaves `to` as it was."""
    run_dir, to = Path(run_dir), Path(to)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained model (model/config.json)")
    if adapter_only and not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no LoRA adapter (adapter/): only backbone.mode=lora runs keep one")
    source = run_dir / "adapter" if adapter_only else model_dir
    for folder in dict.fromkeys((source, model_dir)):
        check_model_files(folder)
    check_export_target(to, run_dir, overwrite)
    recipe = load(str(run_dir / "recipe.yaml"))
    metrics = read_json(run_dir / "metrics.json").get("test", {})
    with staged_folder(to) as staging:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        shutil.copy2(model_dir / "preprocessor_config.json", staging / "preprocessor_config.json")
        shutil.copy2(run_dir / "recipe.yaml", staging / "recipe.yaml")
        write_card(staging, recipe, metrics, adapter=adapter_only)
        (staging / EXPORT_MARKER).write_text(json.dumps({"run": run_identity(run_dir)}))
    return to


def check_push(repo_id: str, given: str, instead: str, api=None) -> None:
    """Refuse, before anything is written, an upload that cannot happen: `repo_id` is no Hub repo id,
    or HF_HUB_OFFLINE is set (for the real Hub: `api` None). `given`: the option that named the repo;
    `instead`: what to do offline."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{given} {repo_id!r} is not a Hub repo id ({err})") from err
    if api is None and hub_constants.HF_HUB_OFFLINE:
        raise ValueError(
            f"{given} {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to push, or {instead}"
        )


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    api=None,
    repo_type: str = "model",
    retry: str | None = None,
) -> str:
    """Upload a folder (an exported model; a packed dataset with repo_type="dataset"); `api` is an
    `HfApi` (token from HF_TOKEN or `hf auth login`). `retry`: how the error says to push later."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type=repo_type)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            commit_message=f"Upload {repo_type} written by finetune",
        )
    except Exception as err:  # network, auth, offline mode: all leave the local folder intact
        retry = retry or f"`python -m finetune export RUN --to {folder} --push-to-hub {repo_id}`"
        raise HubError(
            f"could not push {folder} to the Hub as {repo_id}: {err}. The local folder {folder} is "
            f"intact; push it later with {retry}"
        ) from err
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
