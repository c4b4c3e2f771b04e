"""The one Trainer for every model: task loss (CE or BCE), collator, arguments from a recipe."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from finetune.augment import mixup
from finetune.console import TrainingProgress
from finetune.evaluation import evaluate_windows, scalar_metrics
from finetune.recipe import Recipe

logger = logging.getLogger("finetune")

LABEL_KEYS = ["labels", "track_index"]  # gathered by the Trainer next to the logits


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

    def get_train_dataloader(self):
        """Training drops an epoch's last partial batch when there is more than one batch: a lone
        remainder track would break batch norm, and the next epoch draws fresh crops anyway.
        Evaluation keeps every window (the setting is restored before its loaders are built)."""
        keep = self.args.dataloader_drop_last
        sized = hasattr(self.train_dataset, "__len__")
        self.args.dataloader_drop_last = keep or (sized and len(self.train_dataset) > self._train_batch_size)
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = keep

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        targets = inputs.pop("labels")
        inputs.pop("track_index", None)
        if self.mixup_alpha > 0 and model.training:
            generator = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))  # torch RNG: resumable
            inputs["input_values"], targets = mixup(
                inputs["input_values"], targets, self.mixup_alpha, generator,
                num_labels=self.model.config.num_labels,
            )
        outputs = model(**inputs)
        loss = task_loss(outputs.logits, targets, self.multi_label)  # logits (B, C)
        return (loss, outputs) if return_outputs else loss


def parameter_learning_rates(model, heads: list[str], layers: str | None, lr: float, head_lr: float,
                             layer_decay: float) -> dict[str, float]:
    """Parameter name -> peak learning rate: `head_lr` for the head (the top-level modules `heads`
    and the model's own parameters, such as `layer_weights`), `lr` for the body; with `layer_decay`
    < 1 and `layers` (the backbone's layer list, relative to the base model), transformer layer k of
    L at lr x layer_decay^(L-1-k), the rest of the backbone (embeddings, feature encoder) at
    lr x layer_decay^L."""
    own = {name for name, _ in model.named_parameters(recurse=False)}
    heads = tuple(f"{name}." for name in heads)
    prefix = f"{model.base_model_prefix}.{layers}." if layers and layer_decay != 1 else None
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


def train_from_start_point(trainer: Trainer, resume_from_checkpoint: str | None = None) -> dict | None:
    """Train with the starting point as a candidate for the best model (linear probe then
    fine-tune: the pretrained body with its fitted head). The start is evaluated first and kept when
    no checkpoint beats its validation score, so fine-tuning never ends worse on validation than the
    probe it began from. Returns the start's validation metrics (logged at step 0), None when resuming."""
    if resume_from_checkpoint:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return None
    start = trainer.evaluate()  # eval_* of the starting point
    state = {name: tensor.detach().cpu().clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.train()
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
    metric = recipe.train.metric or "loss"
    return metric, metric != "loss"


def default_workers() -> int:
    """DataLoader workers from the core count, leaving one for the main process."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def training_arguments(recipe: Recipe, run_dir: Path, multi_label: bool) -> TrainingArguments:
    """TrainingArguments from a recipe: one place for every Trainer setting."""
    train = recipe.train
    # Checkpoints and evaluations share one rhythm so the best checkpoint can be restored.
    strategy = "steps" if (train.eval_steps or train.save_steps) else "epoch"
    metric, greater_is_better = selection(recipe)
    plateau = train.scheduler == "reduce_lr_on_plateau"
    workers = recipe.data.num_workers if recipe.data.num_workers is not None else default_workers()
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    return TrainingArguments(
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
        report_to=["tensorboard"] if has_tensorboard else "none",
        label_names=LABEL_KEYS,
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0 and recipe.data.persistent_workers,
        dataloader_pin_memory=(torch.cuda.is_available() if recipe.data.pin_memory is None
                               else recipe.data.pin_memory),
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # no nested bars: finetune.console.TrainingProgress shows the progress
    )


class EpochToDataset(TrainerCallback):
    """Tells the training set the epoch (its crops depend on it).

    accelerate's DataLoader forwards `set_epoch` to the dataset, except after resuming mid-epoch,
    where the batch-skipping wrapper takes the other branch; the Trainer's state knows it always.
    """

    def __init__(self, train_set):
        self.train_set = train_set

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.train_set.set_epoch(int(state.epoch + 1e-6))


class EarlyStopping(TrainerCallback):
    """Stops training after `patience` evaluations without a better validation score, counting
    only evaluations after `min_steps` optimizer steps: a small validation set's plateau early
    in training is noise, not convergence."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int, min_steps: int):
        self.key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater, self.patience, self.min_steps = greater_is_better, patience, min_steps
        self.best: float | None = None
        self.best_step = 0
        self.waited = 0

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
