"""Run a recipe end to end: data -> model -> Trainer -> evaluation -> run folder."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from pathlib import Path

import numpy as np
import transformers
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from finetune import hub, report
from finetune.augment import augment_waveform
from finetune.backbones import FAMILIES
from finetune.clips import (CropReader, EvalWindows, StreamCrops, TrainCrops, task_of, track_table,
                            training_cache)
from finetune.data import DATASET_BUILDERS, load_dataset
from finetune.data.headers import cache_dir
from finetune.evaluation import TrackPredictions, evaluate_windows, readable_windows
from finetune.models import adapter_only, build_model, check_model_args, export_model
from finetune.recipe import Recipe, RecipeError
from finetune.training import AudioCollator, FinetuneTrainer, callbacks, metrics_function, training_arguments

logger = logging.getLogger("finetune")

# Recipe `data.*` keys handed to a dataset builder when set (null = the builder's default).
DATASET_OPTION_KEYS = ("split_scheme", "allow_missing", "tags", "subset", "task")


def dataset_arguments(recipe: Recipe) -> dict:
    """Keyword arguments for the recipe's dataset builder; a set key it does not take is an error."""
    data = recipe.data
    builder = DATASET_BUILDERS[data.name]
    params = inspect.signature(builder).parameters
    root = data.root
    if root is None:
        if data.name != "synthetic":
            raise RecipeError(f"data.root: set it to your {data.name} folder (data.root=/path/to/{data.name})")
        root = str(cache_dir() / "synthetic")
    args = {"root": root}
    for key in DATASET_OPTION_KEYS:
        value = getattr(data, key)
        if value is None:
            continue
        if key not in params:
            valid = [p for p in params if p in DATASET_OPTION_KEYS]
            raise RecipeError(f"data.{key} does not apply to dataset {data.name!r}; "
                              f"its options: {', '.join('data.' + v for v in valid) or 'none'}")
        args[key] = value
    if "seed" in params:
        args["seed"] = recipe.seed
    if data.streaming:  # every builder takes it (finetune.data.common.assemble streams the train split)
        args["streaming"] = True
    return args


def check_recipe(recipe: Recipe) -> None:
    """Every check that needs no data or weights: run before `--dry-run` prints and before a run."""
    dataset_arguments(recipe)
    check_model_args(recipe)
    if recipe.hub.push_to_hub and not recipe.hub.repo_id:
        raise RecipeError("hub.repo_id: set it (user/name) when hub.push_to_hub=true")


def run_dir_for(recipe: Recipe) -> Path:
    """The run folder: output_dir, the latest matching run when resuming, or a new timestamped one.

    Under torchrun / accelerate every process gets the main process's choice.
    """
    if recipe.output_dir:
        return Path(recipe.output_dir)
    runs = Path("runs")
    previous = sorted(p for p in runs.glob(f"{recipe.name}-*") if any(p.glob("checkpoint-*")))
    if recipe.train.resume and previous:
        choice = previous[-1]
    else:
        choice = runs / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(broadcast_object_list([str(choice)])[0])


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint (a run killed mid-save leaves one without trainer_state.json)."""
    complete = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    complete.sort(key=lambda p: int(p.name.split("-")[-1]))
    return str(complete[-1]) if complete else None


def limit_tracks(dataset, count: int, seed: int):
    """At most `count` tracks per split, a seeded random sample. A streamed split is sampled by one
    pass over its metadata rows (reservoir sampling, no audio read), so the sample is the same
    every epoch and for every process, then streamed again."""
    from datasets import IterableDataset

    from finetune.data.common import sample_stream

    def limit(split):
        if isinstance(split, IterableDataset):
            return sample_stream(split, count, seed)
        return split.shuffle(seed=seed).select(range(min(count, len(split))))

    return type(dataset)({name: limit(split) for name, split in dataset.items()})


def augmenter(recipe: Recipe, sample_rate: int):
    """The recipe's waveform augmentation as a picklable callable (y, rng=...), or None when off."""
    aug = recipe.augment
    if aug.probability <= 0 or not (aug.gain_db or aug.noise_snr_db is not None
                                    or aug.time_stretch or aug.pitch_shift):
        return None
    return functools.partial(augment_waveform, sr=sample_rate, gain_db=aug.gain_db,
                             noise_snr_db=aug.noise_snr_db, time_stretch=aug.time_stretch,
                             pitch_shift=aug.pitch_shift, probability=aug.probability)


def training_set(recipe: Recipe, split, reader: CropReader):
    """Random crops of the training split: indexed, or streamed with `data.streaming=true`.

    A streamed split is the builder's `datasets.IterableDataset` (no file opened while building);
    its shards are divided among DataLoader workers. Under torchrun / accelerate the Trainer hands
    the DataLoader of this torch IterableDataset to accelerate, which dispatches batches
    (`dispatch_batches` defaults to True for an IterableDataset): rank 0 iterates the stream and
    sends each process its own slice of every global batch, so processes never see the same crop.
    The stream is therefore NOT split per node here (`split_dataset_by_node` together with
    dispatching would silently train on rank 0's shard only)."""
    if recipe.data.streaming:
        label_names, multi_label = task_of(split)
        return StreamCrops(split, len(label_names), multi_label, reader, seed=recipe.seed)
    paths, targets = track_table(split)
    return TrainCrops(paths, targets, reader, seed=recipe.seed)


def training_seconds(recipe: Recipe, split) -> float | None:
    """Total duration of the training split from its index; None while streaming (not indexed)."""
    return None if recipe.data.streaming else float(np.sum(split["duration"]))


def track_predictions(split, track_index: np.ndarray, paths: list[str], probs: np.ndarray,
                      labels: np.ndarray, label_names: list[str]) -> TrackPredictions:
    """A split's track-level predictions from `evaluate_windows` (rows: the tracks whose windows
    all read, in track order) with each track's id and path."""
    tracks, ids = np.unique(track_index[readable_windows(track_index)]), split["id"]
    return TrackPredictions([ids[t] for t in tracks], [paths[t] for t in tracks], probs, labels, label_names)


def run(recipe: Recipe) -> Path:
    """Train and evaluate `recipe`; return the run folder."""
    check_recipe(recipe)
    PartialState()  # joins the process group under torchrun / accelerate launch
    run_dir = run_dir_for(recipe)
    transformers.set_seed(recipe.seed)
    with PartialState().main_process_first():  # one process generates / indexes, the rest read
        dataset = load_dataset(recipe.data.name, **dataset_arguments(recipe))
    if recipe.data.max_tracks:
        dataset = limit_tracks(dataset, recipe.data.max_tracks, recipe.seed)
    label_names, multi_label = task_of(dataset["train"])
    bundle = build_model(recipe, label_names, multi_label)
    if recipe.backbone.mode == "probe" and recipe.model.name in FAMILIES:  # baselines probe below
        from finetune.backbones.probe import run_probe

        return run_probe(recipe, dataset, bundle, run_dir)
    rate, clip = bundle.sample_rate, recipe.data.clip_seconds

    cache = training_cache(recipe.data.audio_cache, training_seconds(recipe, dataset["train"]),
                           cache_dir() / "audio" / str(rate), rate, recipe.data.audio_cache_max_gib)
    reader = CropReader(rate, clip, augmenter(recipe, rate), cache)
    train_set = training_set(recipe, dataset["train"], reader)
    eval_sets = {
        split: EvalWindows(*track_table(dataset[split]), rate, clip, recipe.data.eval_hop_seconds,
                           description=f"indexing {split} windows")
        for split in ("validation", "test") if split in dataset
    }
    trainer = FinetuneTrainer(
        model=bundle.model,
        args=training_arguments(recipe, run_dir, multi_label),
        train_dataset=train_set,
        eval_dataset=eval_sets["validation"],  # model selection never sees the test split
        data_collator=AudioCollator(bundle.feature_extractor, rate),
        compute_metrics=metrics_function(label_names, multi_label, recipe.eval.aggregate),
        callbacks=callbacks(recipe, train_set),
        multi_label=multi_label,
        mixup_alpha=recipe.augment.mixup_alpha,
    )
    checkpoint = last_checkpoint(run_dir) if recipe.train.resume else None
    if recipe.train.resume and checkpoint is None:
        logger.warning("train.resume=true but %s has no checkpoint: starting from scratch", run_dir)
    trainer.train(resume_from_checkpoint=checkpoint)

    results, predictions = {}, {}
    for split, windows in eval_sets.items():
        prediction = trainer.predict(windows, metric_key_prefix=split)
        labels, track_index = prediction.label_ids
        metrics, probs, track_labels = evaluate_windows(prediction.predictions, labels, track_index,
                                                        label_names, multi_label, recipe.eval.aggregate)
        metrics["skipped_files"] = windows.skipped_files(track_index)
        results[split] = metrics
        predictions[split] = track_predictions(dataset[split], track_index, windows.paths, probs,
                                               track_labels, label_names)
    if trainer.is_world_process_zero():
        write_run_folder(run_dir, recipe, trainer.model, bundle, results, trainer.state.log_history,
                         predictions, dataset)
    return run_dir


def push_run(run_dir: Path, recipe: Recipe) -> None:
    """Export into RUN/hub_export and upload (the LoRA adapter alone when lora.merge_on_export=false);
    a failed upload is reported, the run is kept."""
    adapter = not recipe.lora.merge_on_export and (run_dir / "adapter").is_dir()
    folder = hub.export(run_dir, run_dir / "hub_export", adapter_only=adapter)
    try:
        logger.info("pushed to %s", hub.push_to_hub(folder, recipe.hub.repo_id, recipe.hub.private))
    except hub.HubError as err:
        logger.error("%s", err)


def write_run_folder(run_dir: Path, recipe: Recipe, model, bundle, results: dict,
                     log_history: list[dict], predictions: dict | None = None, dataset=None) -> None:
    """recipe.yaml, metrics.json, predictions/<split>.npz, the trained model (LoRA merged) with its
    model card, the LoRA adapter alone in adapter/, the end-of-run studies of the test predictions
    (with the run's `dataset`), the reports; then the upload if the recipe asks."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for split, tracks in (predictions or {}).items():
        tracks.save(run_dir / "predictions" / f"{split}.npz")
    test = results.get("test", {})
    if adapter_only(model, run_dir / "adapter"):  # LoRA runs, for `export --adapter-only`
        hub.write_card(run_dir / "adapter", recipe, test, adapter=True)
    model = export_model(model)
    model.config.clip_seconds = recipe.data.clip_seconds  # the window predict() uses
    validation = (predictions or {}).get("validation")
    if validation is not None and validation.multi_label and validation.labels.shape == validation.probs.shape:
        from finetune.evaluation import tune_thresholds  # per-tag F1 thresholds: predict()'s default

        model.config.tag_thresholds = [float(t) for t in tune_thresholds(validation.probs, validation.labels)]
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    (run_dir / "log_history.json").write_text(json.dumps(log_history, indent=2))
    model.save_pretrained(str(run_dir / "model"))
    bundle.feature_extractor.save_pretrained(str(run_dir / "model"))
    hub.write_card(run_dir / "model", recipe, test)
    if dataset is not None and "test" in (predictions or {}):
        from finetune.studies import end_of_run  # studies score through run folders: above this module

        end_of_run(run_dir, dataset, predictions["test"], recipe.eval.durations, recipe.seed)
    report.write_reports(run_dir, recipe, results, log_history)
    logger.info("run folder: %s", run_dir)
    if recipe.hub.push_to_hub:
        push_run(run_dir, recipe)
