"""The one Trainer for every model: task loss (CE or BCE), collator, arguments from a recipe."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from finetune.augment import mixup
from finetune.evaluation import evaluate_windows, scalar_metrics
from finetune.recipe import Recipe

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

    def __init__(self, *args, multi_label: bool, mixup_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label
        self.mixup_alpha = mixup_alpha
        # Our loss is a batch mean: let the Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False

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


def metrics_function(label_names: list[str], multi_label: bool, aggregate: str):
    """compute_metrics for the Trainer: windows -> tracks -> scalar metrics."""

    def compute(prediction) -> dict:
        labels, track_index = prediction.label_ids
        metrics, _, _ = evaluate_windows(prediction.predictions, labels, track_index,
                                         label_names, multi_label, aggregate)
        return scalar_metrics(metrics)

    return compute


def default_metric(recipe: Recipe, multi_label: bool) -> str:
    return recipe.train.metric or ("roc_auc_macro" if multi_label else "accuracy")


def default_workers() -> int:
    """DataLoader workers from the core count, leaving one for the main process."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def training_arguments(recipe: Recipe, run_dir: Path, multi_label: bool) -> TrainingArguments:
    """TrainingArguments from a recipe: one place for every Trainer setting."""
    train = recipe.train
    # Checkpoints and evaluations share one rhythm so the best checkpoint can be restored.
    strategy = "steps" if (train.eval_steps or train.save_steps) else "epoch"
    metric = default_metric(recipe, multi_label)
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
            {"mode": "max", "patience": train.plateau_patience, "factor": train.plateau_factor}
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
        greater_is_better=True,
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
        disable_tqdm=False,
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


def callbacks(recipe: Recipe, train_set) -> list:
    """The run's callbacks: the epoch to the training set, early stopping when asked."""
    found = [EpochToDataset(train_set)]
    if recipe.train.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=recipe.train.early_stopping_patience))
    return found
