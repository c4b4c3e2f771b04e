"""Run a recipe end to end: data -> model -> Trainer -> evaluation -> run folder."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import transformers
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from finetune import export, report
from finetune.atomic import write_atomically, writing
from finetune.augment import augment_waveform
from finetune.backbones import family_of
from finetune.checks import check_metric, check_recipe
from finetune.clips import (
    AudioCollator,
    CropReader,
    EvalWindows,
    StreamCrops,
    TrainCrops,
    Windowing,
    crops_per_track,
    task_of,
    track_table,
    training_cache,
)
from finetune.data.recipe_data import recipe_dataset
from finetune.evaluation import evaluate_windows, track_predictions, tune_thresholds
from finetune.leakage import KEY as LEAKAGE_KEY, leakage
from finetune.machine import cache_dir, local_accelerator
from finetune.models import adapter_only, build_model, export_model, head_names
from finetune.probe import probe_head_init, run_probe
from finetune.recipe import Recipe, RecipeError
from finetune.rundir import RunFolder, RunFolderError, claim
from finetune.stats.bootstrap import split_intervals
from finetune.studies import end_of_run
from finetune.training import (
    FinetuneTrainer,
    callbacks,
    metrics_function,
    parameter_learning_rates,
    runnable_precision,
    train_from_start_point,
    training_arguments,
)

logger = logging.getLogger("finetune")


def join_processes() -> PartialState:
    """This process's place in the job, joining the process group under torchrun / accelerate
    launch; over gloo when there is no GPU (accelerate's default state would count one process
    there until the Trainer set it up, so each would stream, and name its run folder, alone)."""
    return PartialState(cpu=local_accelerator() == "cpu")


@contextlib.contextmanager
def run_folder(recipe: Recipe) -> Iterator[RunFolder]:
    """The run's own folder on every process: the main process claims and locks it (finetune.rundir),
    the others are told which it is, or why it was refused."""
    state = PartialState()
    with contextlib.ExitStack() as stack:
        claimed, refusal = None, None
        if state.is_main_process:
            try:
                claimed = stack.enter_context(claim(recipe))
            except RecipeError as err:
                refusal = str(err)
        if state.num_processes > 1:
            claimed, refusal = broadcast_object_list([claimed, refusal])
        if refusal:
            raise RunFolderError(refusal)
        yield claimed


def augmenter(recipe: Recipe, sample_rate: int):
    """The recipe's waveform augmentation as a picklable callable (y, rng=...), or None when off."""
    aug = recipe.augment
    if aug.probability <= 0 or not (aug.gain_db or aug.noise_snr_db is not None or aug.time_stretch or aug.pitch_shift):
        return None
    return functools.partial(
        augment_waveform,
        sr=sample_rate,
        gain_db=aug.gain_db,
        noise_snr_db=aug.noise_snr_db,
        time_stretch=aug.time_stretch,
        pitch_shift=aug.pitch_shift,
        probability=aug.probability,
    )


def training_set(recipe: Recipe, split, reader: CropReader):
    """Random crops of the training split: indexed, or streamed with `data.streaming=true`.

    A streamed split is the builder's `datasets.IterableDataset` (no file opened while building).
    Under torchrun / accelerate each process streams its own shards of it (`StreamCrops` with this
    process's rank) and the Trainer's DataLoader is left to it (`FinetuneTrainer`, with accelerate's
    `dispatch_batches` off): no process reads or decodes another's files."""
    if recipe.data.streaming:
        label_names, multi_label = task_of(split)
        state = PartialState()
        return StreamCrops(
            split,
            len(label_names),
            multi_label,
            reader,
            seed=recipe.seed,
            crops_per_row=recipe.data.crops_per_track or 1,
            rank=state.process_index,
            world_size=state.num_processes,
        )
    paths, targets = track_table(split)
    crops = crops_per_track(split["duration"], recipe.data.clip_seconds, recipe.data.crops_per_track)
    return TrainCrops(paths, targets, reader, seed=recipe.seed, crops=crops, durations=split["duration"])


FEW_STEPS = 300  # fewer optimizer steps than this: warn that the run may stop before it converges


def planned_steps(recipe: Recipe, train_set, processes: int) -> int:
    """Optimizer steps the run will take (before any early stop)."""
    if recipe.train.max_steps > 0:
        return recipe.train.max_steps
    per_step = recipe.train.batch_size * recipe.train.grad_accum * processes
    batches = len(train_set) // per_step if len(train_set) > per_step else 1  # the last partial batch is dropped
    return int(batches * recipe.train.epochs)


def warn_if_few_steps(recipe: Recipe, train_set, processes: int) -> None:
    steps = planned_steps(recipe, train_set, processes)
    logger.info(
        "training: %d crops of %g s per epoch, %d optimizer steps in all",
        len(train_set),
        recipe.data.clip_seconds,
        steps,
    )
    if steps < FEW_STEPS and recipe.train.max_steps <= 0:
        logger.warning(
            "this run trains for only %d optimizer steps (%d crops an epoch, batch %d, %g epochs): "
            "too few to converge; raise train.epochs or data.crops_per_track, or lower "
            "train.batch_size",
            steps,
            len(train_set),
            recipe.train.batch_size,
            recipe.train.epochs,
        )


def learning_rates(recipe: Recipe, model) -> dict[str, float]:
    """Each parameter's peak learning rate (train.head_lr for the head, train.layer_decay by layer)."""
    train = recipe.train
    family = family_of(recipe.model.name, model)  # auto: the checkpoint's
    head_lr = train.lr if train.head_lr is None else train.head_lr
    return parameter_learning_rates(
        model, head_names(model), family.layers if family else None, train.lr, head_lr, train.layer_decay
    )


def training_seconds(recipe: Recipe, split) -> float | None:
    """Total duration of the training split from its index; None while streaming (not indexed)."""
    return None if recipe.data.streaming else float(np.sum(split["duration"]))


class RunIncomplete(RuntimeError):
    """Training ended and its results are saved, but a step after it (a study, the report, the upload)
    failed: the command must not report success."""

    def __init__(self, run_dir: Path, message: str):
        super().__init__(message)
        self.run_dir = run_dir


def run(recipe: Recipe, callbacks: tuple = ()) -> Path:
    """Train and evaluate `recipe` in its own folder; return the folder. `callbacks`: more
    TrainerCallbacks for the Trainer (a search's pruning); a probe run has no Trainer to give them."""
    recipe = runnable_precision(recipe)  # recipe.yaml records what really runs
    check_recipe(recipe)
    join_processes()
    with run_folder(recipe) as claimed:
        if not claimed.finished:  # a finished run's resume leaves it as it is
            train_and_evaluate(recipe, claimed.path, claimed.checkpoint, claimed.resumed, callbacks)
    return claimed.path


def train_and_evaluate(
    recipe: Recipe, run_dir: Path, checkpoint: str | None, resumed: bool, extra_callbacks: tuple = ()
) -> None:
    """Data, model, training (from `checkpoint` when resuming), scores on every split, the run folder."""
    transformers.set_seed(recipe.seed)
    with PartialState().main_process_first():  # one process generates / indexes, the rest read
        dataset = recipe_dataset(recipe)
    label_names, multi_label = task_of(dataset["train"])
    check_metric(recipe, multi_label, len(label_names))  # folder and hub datasets tell their task only now
    bundle = build_model(recipe, label_names, multi_label)
    if recipe.backbone.mode == "probe":
        with PartialState().main_process_first():  # one process embeds into the cache, the rest read it
            outcome = run_probe(recipe, dataset, bundle)
        if PartialState().is_main_process:
            write_run_folder(
                run_dir,
                recipe,
                outcome.model,
                bundle,
                outcome.results,
                outcome.log_history,
                outcome.predictions,
                dataset,
            )
        return
    if resumed:
        logger.info("resuming %s from %s", run_dir, checkpoint) if checkpoint else logger.warning(
            "train.resume=true but %s has no complete checkpoint: starting from the beginning", run_dir
        )
    if recipe.backbone.head_init == "probe" and checkpoint is None:  # a resumed run's head is in its checkpoint
        with PartialState().main_process_first():
            probe_head_init(recipe, dataset, bundle)
    freeze = recipe.train.freeze_batch_norm
    if freeze or (freeze is None and recipe.backbone.path and hasattr(bundle.model, "freeze_batch_norm")):
        bundle.model.freeze_batch_norm()
    rate, clip = bundle.sample_rate, recipe.data.clip_seconds

    cache = training_cache(
        recipe.data.audio_cache,
        training_seconds(recipe, dataset["train"]),
        cache_dir() / "audio" / str(rate),
        rate,
        recipe.data.audio_cache_max_gib,
    )
    reader = CropReader(rate, clip, augmenter(recipe, rate), cache)
    train_set = training_set(recipe, dataset["train"], reader)
    if not recipe.data.streaming:
        warn_if_few_steps(recipe, train_set, PartialState().num_processes)
    windowing = Windowing.of_recipe(recipe)
    eval_sets = {
        split: EvalWindows(*track_table(dataset[split]), rate, windowing, description=f"indexing {split} windows")
        for split in ("validation", "test")
        if split in dataset
    }
    trainer = FinetuneTrainer(
        model=bundle.model,
        args=training_arguments(recipe, run_dir, multi_label),
        train_dataset=train_set,
        eval_dataset=eval_sets["validation"],  # model selection never sees the test split
        data_collator=AudioCollator(bundle.feature_extractor, rate),
        compute_metrics=metrics_function(label_names, multi_label, windowing.aggregate),
        callbacks=[*callbacks(recipe, train_set), *extra_callbacks],
        multi_label=multi_label,
        mixup_alpha=recipe.augment.mixup_alpha,
        learning_rates=learning_rates(recipe, bundle.model),
    )
    start = None
    if recipe.backbone.head_init == "probe":
        start = train_from_start_point(trainer, checkpoint)
    else:
        trainer.train(resume_from_checkpoint=checkpoint)

    results, predictions = {}, {}
    for split, windows in eval_sets.items():
        prediction = trainer.predict(windows, metric_key_prefix=split)
        labels, track_index = prediction.label_ids
        metrics, probs, track_labels = evaluate_windows(
            prediction.predictions, labels, track_index, label_names, multi_label, windowing.aggregate
        )
        metrics["loss"] = prediction.metrics.get(f"{split}_loss")
        metrics["skipped_files"] = windows.skipped_files(track_index)
        results[split] = metrics
        predictions[split] = track_predictions(
            dataset[split]["id"], windows.paths, track_index, probs, track_labels, label_names
        )
    if start is not None:  # the linear-probed starting point: its validation scores, and whether it was kept
        timing = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")
        results["validation"]["start_point"] = {
            key.removeprefix("eval_"): value for key, value in start.items() if key.removeprefix("eval_") not in timing
        }
    if trainer.is_world_process_zero():
        write_run_folder(
            run_dir, recipe, trainer.model, bundle, results, trainer.state.log_history, predictions, dataset
        )


def push_run(run_dir: Path, recipe: Recipe) -> None:
    """Export into RUN/hub_export and upload (the LoRA adapter alone when lora.merge_on_export=false)."""
    adapter = not recipe.lora.merge_on_export and (run_dir / "adapter").is_dir()
    folder = export.export_run(run_dir, run_dir / "hub_export", adapter_only=adapter)
    logger.info("pushed to %s", export.push_to_hub(folder, recipe.hub.repo_id, recipe.hub.private))


def finish(run_dir: Path, steps: dict) -> None:
    """Run each step after the results are saved (name -> callable); a step that fails does not stop
    the others, and the failures end in one RunIncomplete, so the command does not exit 0."""
    failed = {}
    for name, step in steps.items():
        try:
            step()
        except Exception as err:  # every step runs; the failures are reported together
            failed[name] = err
    if failed:
        causes = "; ".join(f"{name}: {err}" for name, err in failed.items())
        raise RunIncomplete(run_dir, f"{run_dir}: training and its results are saved, but {causes}")


def write_run_folder(
    run_dir: Path,
    recipe: Recipe,
    model,
    bundle,
    results: dict,
    log_history: list[dict],
    predictions: dict | None = None,
    dataset=None,
) -> None:
    """metrics.json, predictions/<split>.npz, the trained model (LoRA merged) with its
    model card, the LoRA adapter alone in adapter/, the end-of-run studies of the test predictions
    (with the run's `dataset`), the reports; then the upload if the recipe asks."""
    test = results.get("test", {})
    for split, metrics in results.items():  # 95 % bootstrap intervals over tracks, for the report and summary
        metrics["intervals"] = split_intervals(metrics, (predictions or {}).get(split))
    if dataset is not None and test:  # how many test tracks share an artist with training
        test[LEAKAGE_KEY] = leakage(dataset, recipe.data.group_by)
    with writing(run_dir, "the run's results"):  # metrics.json last: a run with it is complete
        for split, tracks in (predictions or {}).items():
            tracks.save(run_dir / "predictions" / f"{split}.npz")
        if adapter_only(model, run_dir / "adapter"):  # LoRA runs, for `export --adapter-only`
            export.write_card(run_dir / "adapter", recipe, test, adapter=True)
        model = export_model(model)
        Windowing.of_recipe(recipe).save_to(model.config)  # the windows predict() scores
        validation = (predictions or {}).get("validation")
        if validation is not None and validation.multi_label and validation.labels.shape == validation.probs.shape:
            model.config.tag_thresholds = [float(t) for t in tune_thresholds(validation.probs, validation.labels)]
        model.save_pretrained(str(run_dir / "model"))
        bundle.feature_extractor.save_pretrained(str(run_dir / "model"))
        export.write_card(run_dir / "model", recipe, test)
        (run_dir / "log_history.json").write_text(json.dumps(log_history, indent=2))
        write_atomically(run_dir / "metrics.json", json.dumps(results, indent=2))
    steps = {}
    if dataset is not None and "test" in (predictions or {}):
        steps["the end-of-run studies"] = lambda: end_of_run(
            run_dir, dataset=dataset, test=predictions["test"], durations=recipe.eval.durations, seed=recipe.seed
        )
    steps["the report"] = lambda: report.write_reports(run_dir, recipe, results, log_history)
    if recipe.hub.push_to_hub:
        steps["the upload (export.push_to_hub)"] = lambda: push_run(run_dir, recipe)
    finish(run_dir, steps)
