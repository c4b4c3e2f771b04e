"""The one Trainer for every model: task loss (CE or BCE), collator, arguments from a recipe."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import time
import types
import typing
from enum import Enum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from accelerate.data_loader import IterableDatasetShard
from accelerate.utils import is_bf16_available
from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.integrations import (INTEGRATION_TO_CALLBACK, get_available_reporting_integrations,
                                       is_flytekit_available)

from finetune.atomic import writing
from finetune.augment import mixup
from finetune.backbones.heads import base_model_name
from finetune.console import bars_enabled, metric_text
from finetune.evaluation import evaluate_windows, scalar_metrics
from finetune.metrics import LOSS, named, selectable_names, task_name
from finetune.recipe import Recipe, RecipeError, coerce, listed

logger = logging.getLogger("finetune")

LABEL_KEYS = ["labels", "track_index"]  # gathered by the Trainer next to the logits
RUNNING_LOSS_FILE = "running_loss.json"  # in each checkpoint: the loss accumulated since the last log line


def task_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """BCE-with-logits for tagging, cross-entropy for genres (hard or soft targets)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets)


class AudioCollator:
    """List of {input_values (T,), labels, track_index} -> the model's batch via its extractor."""

    def __init__(self, feature_extractor, sample_rate: int):
        self.feature_extractor = feature_extractor
        self.sample_rate = sample_rate

    def __call__(self, items: list[dict]) -> dict:
        batch = dict(self.feature_extractor(
            [item["input_values"] for item in items], sampling_rate=self.sample_rate,
            return_tensors="pt",
        ))
        batch["labels"] = torch.as_tensor(np.stack([item["labels"] for item in items]))
        batch["track_index"] = torch.as_tensor([item["track_index"] for item in items])
        return batch


class TrainingProgress(TrainerCallback):
    """The Trainer's progress: a bar of optimizer steps with the last loss on a terminal, one line
    per evaluation; without a terminal, a line per logged loss and per evaluation. Replaces the
    Trainer's own printer, which prints raw log dictionaries between nested bars."""

    def __init__(self):
        self.bar = None
        self.started = 0.0

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            logger.info("%s", text)

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        if bars_enabled() and state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero or "loss" not in logs:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")
        else:
            logger.info("step %d/%d: loss %.4f, lr %.2e", state.global_step, state.max_steps, logs["loss"],
                        logs.get("learning_rate", 0.0))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:
            self._line(f"step {state.global_step}: validation {metric_text(metrics or {})}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if state.is_world_process_zero:
            best = f", best checkpoint at step {state.best_global_step}" if state.best_global_step else ""
            logger.info("training: %d steps in %.0f s%s", state.global_step, time.monotonic() - self.started, best)


class FinetuneTrainer(Trainer):
    """Trainer whose loss follows the task, not the model class."""

    def __init__(self, *args, multi_label: bool, mixup_alpha: float = 0.0,
                 learning_rates: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label
        self.mixup_alpha = mixup_alpha
        self.learning_rates = learning_rates or {}  # parameter name -> peak learning rate (args' when absent)
        self.remove_callback(PrinterCallback)  # raw log dictionaries: our own progress instead
        self.add_callback(TrainingProgress())
        self.add_callback(RestoreRunningLoss(self))
        self.resumed_from: str | None = None
        # Our loss is a batch mean: let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model=None):
        """The Trainer's optimizer with one parameter group per (peak learning rate, weight decay
        or not): discriminative learning rates for head and body, layer-wise decay. The schedule
        scales every group alike."""
        if self.optimizer is None and self.learning_rates:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            groups: dict[tuple[float, bool], list] = {}
            for name, param in model.named_parameters():
                if param.requires_grad:
                    rate = self.learning_rates.get(name, self.args.learning_rate)
                    groups.setdefault((rate, name in decay), []).append(param)
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(
                [{"params": params, "lr": rate, "weight_decay": self.args.weight_decay if decays else 0.0}
                 for (rate, decays), params in groups.items()], **kwargs)
        return super().create_optimizer(model)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        self.resumed_from = resume_from_checkpoint
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint plus the training loss accumulated since the last log line, written
        first (a checkpoint counts once its trainer_state.json, written last, exists)."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with writing(folder, "the checkpoint"):
            if self.args.should_save:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / RUNNING_LOSS_FILE).write_text(json.dumps({
                    "loss_since_log": float(self._tr_loss.item()), "total_loss": self._total_loss_scalar,
                    "last_logged_step": self._globalstep_last_logged}))
            super()._save_checkpoint(model, trial)

    def restore_running_loss(self) -> None:
        """On resume, the logging state of the checkpoint, so the next logged loss averages the same
        steps as in an uninterrupted run."""
        path = Path(self.resumed_from or "") / RUNNING_LOSS_FILE
        if self.resumed_from and path.is_file():
            saved = json.loads(path.read_text())
            self._tr_loss.fill_(saved["loss_since_log"])
            self._total_loss_scalar = saved["total_loss"]
            self._globalstep_last_logged = saved["last_logged_step"]

    def with_own_seed(self, loader):
        """A DataLoader that draws its workers' base seed from a generator of its own: creating one
        never advances torch's global RNG (dropout, mixup), so evaluations and a resume (which
        creates loaders at other moments than an uninterrupted run) leave training's randomness as it
        is. Crops and augmentation are seeded per item (finetune.clips.TrainCrops)."""
        inner = getattr(loader, "base_dataloader", loader)  # accelerate's adapter iterates the DataLoader it wraps
        inner.generator = torch.Generator().manual_seed(self.args.seed)
        return loader

    def get_eval_dataloader(self, eval_dataset=None):
        return self.with_own_seed(super().get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        return self.with_own_seed(super().get_test_dataloader(test_dataset))

    def get_train_dataloader(self):
        """Training drops an epoch's last partial batch when there is more than one batch: a lone
        remainder track would break batch norm, and the next epoch draws fresh crops anyway.
        Evaluation keeps every window (the setting is restored before its loaders are built).

        A streamed set that reads its own process's shards (`StreamCrops`, several processes) keeps
        all it yields: accelerate (batches not dispatched) wraps an iterable dataset in an
        `IterableDatasetShard` that keeps 1 / world of every global batch, made a pass-through here
        (as transformers does for its rank-aware batch samplers)."""
        keep = self.args.dataloader_drop_last
        sized = hasattr(self.train_dataset, "__len__")
        self.args.dataloader_drop_last = keep or (sized and len(self.train_dataset) > self._train_batch_size)
        try:
            loader = super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = keep
        shard = loader.dataset
        if getattr(self.train_dataset, "world_size", 1) > 1 and isinstance(shard, IterableDatasetShard):
            shard.num_processes, shard.process_index = 1, 0
        return self.with_own_seed(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        targets = inputs.pop("labels")
        inputs.pop("track_index", None)
        if self.mixup_alpha > 0 and model.training:
            generator = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))  # torch RNG: resumable
            key = self.model.main_input_name  # input_values; input_features for Whisper
            inputs[key], targets = mixup(
                inputs[key], targets, self.mixup_alpha, generator,
                num_labels=self.model.config.num_labels,
            )
        outputs = model(**inputs)
        loss = task_loss(outputs.logits, targets, self.multi_label)  # logits (B, C)
        # evaluation gathers the logits alone (a weighted-layer model also returns every hidden state)
        return (loss, {"logits": outputs.logits}) if return_outputs else loss


def parameter_learning_rates(model, heads: list[str], layers: str | None, lr: float, head_lr: float,
                             layer_decay: float) -> dict[str, float]:
    """Parameter name -> peak learning rate: `head_lr` for the head (the top-level modules `heads`
    and the model's own parameters, such as `layer_weights`), `lr` for the body; with `layer_decay`
    < 1 and `layers` (the backbone's layer list, relative to the base model), transformer layer k of
    L at lr x layer_decay^(L-1-k), the rest of the backbone (embeddings, feature encoder) at
    lr x layer_decay^L."""
    own = {name for name, _ in model.named_parameters(recurse=False)}
    heads = tuple(f"{name}." for name in heads)
    prefix = f"{base_model_name(model)}.{layers}." if layers and layer_decay != 1 else None
    count = model.config.num_hidden_layers if prefix else 0
    rates = {}
    for name, _ in model.named_parameters():
        if name in own or name.startswith(heads):
            rates[name] = head_lr
        elif prefix is None:
            rates[name] = lr
        elif name.startswith(prefix):
            rates[name] = lr * layer_decay ** (count - 1 - int(name[len(prefix):].split(".")[0]))
        else:
            rates[name] = lr * layer_decay ** count
    return rates


START_POINT_DIR = "start_point"  # in the run folder: the starting point's weights and validation scores


def start_point(trainer: Trainer, resume_from_checkpoint: str | None) -> tuple[dict, dict] | None:
    """The starting point's validation metrics and weights: evaluated and saved into the run folder
    when training starts, read back when it resumes (None for a run resumed without them)."""
    folder = Path(trainer.args.output_dir) / START_POINT_DIR
    if resume_from_checkpoint:
        if not (folder / "metrics.json").is_file():
            return None
        return json.loads((folder / "metrics.json").read_text()), load_file(str(folder / "model.safetensors"))
    metrics = trainer.evaluate()  # eval_* of the starting point
    state = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in trainer.model.state_dict().items()}
    if trainer.is_world_process_zero():
        folder.mkdir(parents=True, exist_ok=True)
        save_file(state, str(folder / "model.safetensors"))
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics, state


def train_from_start_point(trainer: Trainer, resume_from_checkpoint: str | None = None) -> dict | None:
    """Train with the starting point as a candidate for the best model (linear probe then
    fine-tune: the pretrained body with its fitted head). The start is evaluated first and kept when
    no checkpoint beats its validation score, so fine-tuning never ends worse on validation than the
    probe it began from. Returns the start's validation metrics (logged at step 0); a resumed run
    decides from the start it saved, exactly as it would have uninterrupted."""
    found = start_point(trainer, resume_from_checkpoint)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if found is None:
        return None
    start, state = found
    key = f"eval_{trainer.args.metric_for_best_model}".replace("eval_eval_", "eval_")
    best, first = trainer.state.best_metric, start.get(key)
    if first is not None and (best is None or (first > best if trainer.args.greater_is_better else first < best)):
        logger.info("fine-tuning did not beat its starting point on validation %s (%.4f vs %s): keeping the start",
                    key.removeprefix("eval_"), first, "none" if best is None else f"{best:.4f}")
        trainer.model.load_state_dict(state)
        start["kept_start"] = True
    trainer.state.log_history.insert(0, {**start, "step": 0})
    return start


def metrics_function(label_names: list[str], multi_label: bool, aggregate: str):
    """compute_metrics for the Trainer: windows -> tracks -> scalar metrics."""

    def compute(prediction) -> dict:
        labels, track_index = prediction.label_ids
        metrics, _, _ = evaluate_windows(prediction.predictions, labels, track_index,
                                         label_names, multi_label, aggregate)
        return scalar_metrics(metrics)

    return compute


def selection(recipe: Recipe) -> tuple[str, bool]:
    """(validation metric that picks the best checkpoint and drives early stopping, greater is
    better): `train.metric`, by default the validation loss, which keeps falling where the accuracy
    of a few validation tracks has long plateaued."""
    metric = recipe.train.metric or LOSS
    return metric, named(metric).higher_is_better


def check_metric(recipe: Recipe, multi_label: bool, num_labels: int | None = None) -> None:
    """Refuse a `train.metric` that validation does not report for this task (a score of the metric
    registry, `finetune.metrics.selectable_names`), listing the valid ones; `num_labels` None: not
    known yet (before the dataset is indexed), any count."""
    metric = recipe.train.metric or LOSS
    valid = selectable_names(task_name(multi_label), num_labels)
    if metric not in valid:
        task = "multi-label tagging" if multi_label else "single-label classification"
        over = "" if num_labels is None else f" over {num_labels} {'tags' if multi_label else 'classes'}"
        raise RecipeError(f"train.metric: {metric!r} is not a validation metric of {task}{over}; "
                          f"valid: {listed(valid)}")


def default_workers() -> int:
    """DataLoader workers from the core count, leaving one for the main process."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# TrainingArguments that a recipe key sets: train.trainer_args refuses them, naming the key to use.
RECIPE_SETS = {
    "output_dir": "output_dir", "seed": "seed", "num_train_epochs": "train.epochs", "max_steps": "train.max_steps",
    "per_device_train_batch_size": "train.batch_size", "per_device_eval_batch_size": "train.eval_batch_size",
    "learning_rate": "train.lr", "weight_decay": "train.weight_decay", "warmup_steps": "train.warmup_ratio",
    "warmup_ratio": "train.warmup_ratio",  # transformers 4's name
    "lr_scheduler_type": "train.scheduler", "lr_scheduler_kwargs": "train.plateau_patience and train.plateau_factor",
    "gradient_accumulation_steps": "train.grad_accum", "max_grad_norm": "train.max_grad_norm",
    "fp16": "train.precision", "bf16": "train.precision",
    "eval_strategy": "train.eval_steps", "eval_steps": "train.eval_steps",
    "save_strategy": "train.save_steps", "save_steps": "train.save_steps", "save_total_limit": "train.save_total_limit",
    "metric_for_best_model": "train.metric", "greater_is_better": "train.metric",
    "logging_strategy": "train.logging_steps", "logging_steps": "train.logging_steps",
    "resume_from_checkpoint": "train.resume", "dataloader_num_workers": "data.num_workers",
    "dataloader_persistent_workers": "data.persistent_workers", "dataloader_pin_memory": "data.pin_memory",
}
# TrainingArguments the toolkit's own code relies on: refused, with the reason.
FINETUNE_SETS = {
    "label_names": "the names under which evaluation gathers labels and track indices",
    "remove_unused_columns": "false: the collator reads columns the model does not take",
    "load_best_model_at_end": "true: the run keeps its best checkpoint (train.metric picks it)",
}
REPORTER_PACKAGES = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "flyte": "flytekit"}  # pip name, where it differs
PLAIN_TYPES = (bool, int, float, str, dict, type(None))
GPU_ENGINES = ("fsdp", "deepspeed")  # sharded training engines that accelerate only enables on GPUs
# Fields whose annotation is narrower than what TrainingArguments takes (transformers 5.x annotates
# fsdp as str | None, yet wants fsdp=True and deprecates the strings).
FIELD_TYPES = {"fsdp": bool | str | None}


def installed_reporters() -> set[str]:
    """The report_to integrations whose package is installed here."""
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
    installed = installed_reporters()
    for name in [value] if isinstance(value, str) else value or []:
        if name in ("all", "none"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise RecipeError(f"train.trainer_args.report_to: {name!r} is not one of all, none, "
                              f"{', '.join(INTEGRATION_TO_CALLBACK)}")
        if name not in installed:
            raise RecipeError(f"train.trainer_args.report_to: {name} is not installed; "
                              f"pip install {REPORTER_PACKAGES.get(name, name)}")


def check_trainer_args(recipe: Recipe) -> dict:
    """`train.trainer_args` checked against transformers.TrainingArguments and converted to its field
    types, before anything heavy runs. Refused, naming the key: a name that is no field (with the
    closest one), a field a recipe key sets (with that key) or that the toolkit relies on, a value of
    the wrong type or outside the field's choices, a report_to integration that is not installed."""
    fields = [field.name for field in dataclasses.fields(TrainingArguments) if field.init]
    hints = {**typing.get_type_hints(TrainingArguments), **FIELD_TYPES}
    checked = {}
    for name, value in recipe.train.trainer_args.items():
        check_trainer_arg_name(name, fields)
        checked[name] = trainer_arg_value(f"train.trainer_args.{name}", value, hints[name])
    if "report_to" in checked:
        check_report_to(checked["report_to"])
    return checked


def accelerator(cuda: bool, mps: bool) -> str:
    """The device to train and predict on: a CUDA GPU, else an Apple GPU (MPS), else the CPU."""
    return "cuda" if cuda else "mps" if mps else "cpu"


def local_accelerator() -> str:
    """`accelerator` of this machine."""
    return accelerator(torch.cuda.is_available(), torch.backends.mps.is_available())


def precision_runs(precision: str, device: str) -> bool:
    """Whether `train.precision` really trains on `device` (accelerate's rules): fp32 anywhere; fp16
    needs a GPU's autocast (on a CPU accelerate trains in fp32 without a word); bf16 runs on a CPU
    and on a GPU that supports it."""
    if precision == "fp16":
        return device != "cpu" and torch.amp.is_autocast_available(device)
    if precision == "bf16":
        return device == "cpu" or is_bf16_available(ignore_tpu=True)
    return True


def runnable_precision(recipe: Recipe) -> Recipe:
    """`recipe` with train.precision as it will really train on this machine: fp32 in place of a
    mixed precision its device cannot train in (`precision_runs`), with a warning; `recipe` itself
    when it runs as asked."""
    asked, device = recipe.train.precision, local_accelerator()
    if precision_runs(asked, device):
        return recipe
    logger.warning("train.precision=%s does not train on this machine (%s): training in fp32, recorded as "
                   "train.precision=fp32", asked, device)
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, precision="fp32"))


def training_arguments(recipe: Recipe, run_dir: Path, multi_label: bool) -> TrainingArguments:
    """TrainingArguments from a recipe: one place for every Trainer setting. `train.trainer_args`
    adds any other field (and may replace the defaults below that no recipe key sets: report_to,
    use_cpu, disable_tqdm, logging_first_step, ddp_find_unused_parameters)."""
    train = recipe.train
    # Checkpoints and evaluations share one rhythm so the best checkpoint can be restored.
    strategy = "steps" if (train.eval_steps or train.save_steps) else "epoch"
    metric, greater_is_better = selection(recipe)
    plateau = train.scheduler == "reduce_lr_on_plateau"
    workers = recipe.data.num_workers if recipe.data.num_workers is not None else default_workers()
    device = local_accelerator()
    settings = dict(
        output_dir=str(run_dir),
        seed=recipe.seed,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size or train.batch_size,
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,  # transformers 5 reads a value below 1 as a ratio
        lr_scheduler_type=train.scheduler,
        lr_scheduler_kwargs=(
            {"mode": "max" if greater_is_better else "min", "patience": train.plateau_patience,
             "factor": train.plateau_factor}
            if plateau else {}
        ),
        gradient_accumulation_steps=train.grad_accum,
        max_grad_norm=train.max_grad_norm,
        fp16=train.precision == "fp16",
        bf16=train.precision == "bf16",
        eval_strategy=strategy,
        eval_steps=train.eval_steps or train.save_steps,
        save_strategy=strategy,
        save_steps=train.save_steps or train.eval_steps or 500,  # 500: unused with "epoch"
        save_total_limit=train.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better,
        logging_strategy="steps",
        logging_steps=train.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"] if "tensorboard" in installed_reporters() else "none",
        label_names=LABEL_KEYS,
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0 and recipe.data.persistent_workers,
        dataloader_pin_memory=device == "cuda" if recipe.data.pin_memory is None else recipe.data.pin_memory,
        use_cpu=device == "cpu",
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # no nested bars: TrainingProgress shows the progress
        # streamed: each process reads its own shards (finetune.clips.StreamCrops), none dispatched from rank 0
        accelerator_config={"dispatch_batches": False} if recipe.data.streaming else None,
    )
    extra = check_trainer_args(recipe)
    engines = [name for name in GPU_ENGINES if extra.get(name)]
    if engines and device == "cpu":
        logger.warning("train.trainer_args.%s: accelerate ignores it on CPU processes (no GPU here); this run "
                       "trains without it", engines[0])
    return TrainingArguments(**{**settings, **extra})


class EpochToDataset(TrainerCallback):
    """Tells the training set the epoch (its crops depend on it).

    accelerate's DataLoader forwards `set_epoch` to the dataset, except after resuming mid-epoch,
    where the batch-skipping wrapper takes the other branch; the Trainer's state knows it always.
    """

    def __init__(self, train_set):
        self.train_set = train_set

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.train_set.set_epoch(int(state.epoch + 1e-6))


class RestoreRunningLoss(TrainerCallback):
    """Calls `FinetuneTrainer.restore_running_loss` once the Trainer has set up its logging state."""

    def __init__(self, trainer: "FinetuneTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.restore_running_loss()


class EarlyStopping(TrainerCallback, ExportableState):
    """Stops training after `patience` evaluations without a better validation score, counting
    only evaluations after `min_steps` optimizer steps: a small validation set's plateau early
    in training is noise, not convergence. Its count is saved in every checkpoint."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int, min_steps: int):
        self.metric = metric
        self.key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater, self.patience, self.min_steps = greater_is_better, patience, min_steps
        self.best: float | None = None
        self.best_step = 0
        self.waited = 0

    def state(self) -> dict:
        return {"args": {"metric": self.metric, "greater_is_better": self.greater, "patience": self.patience,
                         "min_steps": self.min_steps},
                "attributes": {"best": self.best, "best_step": self.best_step, "waited": self.waited}}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.key)
        if value is None or value != value:  # absent or NaN: nothing to compare
            return
        if self.best is None or (value > self.best if self.greater else value < self.best):
            self.best, self.best_step, self.waited = value, state.global_step, 0
            return
        if state.global_step < self.min_steps:
            return
        self.waited += 1
        if self.waited >= self.patience:
            logger.info("early stopping at step %d: validation %s has not improved for %d evaluations "
                        "(best %.4f at step %d)", state.global_step, self.key.removeprefix("eval_"),
                        self.waited, self.best, self.best_step)
            control.should_training_stop = True


def callbacks(recipe: Recipe, train_set) -> list:
    """The run's callbacks: the epoch to the training set, early stopping when asked."""
    found = [EpochToDataset(train_set)]
    if recipe.train.early_stopping_patience:
        metric, greater = selection(recipe)
        found.append(EarlyStopping(metric, greater, recipe.train.early_stopping_patience,
                                   recipe.train.early_stopping_min_steps))
    return found
