"""The one Trainer for every model: task loss (CE or BCE), collator, arguments from a recipe."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.data_loader import IterableDatasetShard
from accelerate.utils import is_bf16_available
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from finetune.atomic import writing
from finetune.augment import mixup
from finetune.backbones.heads import base_model_name
from finetune.checks import check_trainer_args, installed_reporters
from finetune.console import bars_enabled, metric_text
from finetune.divergence import StopOnDivergence, TrainingDiverged
from finetune.evaluation import evaluate_windows, scalar_metrics
from finetune.losses import task_loss
from finetune.machine import default_workers, local_accelerator
from finetune.metrics import selection
from finetune.recipe import Recipe

logger = logging.getLogger("finetune")

LABEL_KEYS = ["labels", "track_index"]  # gathered by the Trainer next to the logits
RUNNING_LOSS_FILE = "running_loss.json"  # in each checkpoint: the loss accumulated since the last log line


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
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="training", unit="step", dynamic_ncols=True
            )

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
            logger.info(
                "step %d/%d: loss %.4f, lr %.2e",
                state.global_step,
                state.max_steps,
                logs["loss"],
                logs.get("learning_rate", 0.0),
            )

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
            if early_best(state):
                logger.warning(
                    "the model kept is the checkpoint of step %d of %d, selected on validation %s: it has "
                    "barely trained; a small validation split, or one of other artists than training, "
                    "can favour it (train.metric picks another metric; more validation tracks help)",
                    state.best_global_step,
                    state.global_step,
                    args.metric_for_best_model,
                )


EARLY_BEST = 0.1  # a best checkpoint in the first tenth of a run's steps is worth a warning


def early_best(state) -> bool:
    """True when the checkpoint kept as best comes from the first EARLY_BEST of at least 20 steps."""
    return (
        bool(state.best_global_step)
        and state.global_step >= 20
        and (state.best_global_step <= EARLY_BEST * state.global_step)
    )


class FinetuneTrainer(Trainer):
    """Trainer whose loss follows the task, not the model class."""

    def __init__(
        self,
        *args,
        multi_label: bool,
        mixup_alpha: float = 0.0,
        learning_rates: dict[str, float] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label
        self.mixup_alpha = mixup_alpha
        self.learning_rates = learning_rates or {}  # parameter name -> peak learning rate (args' when absent)
        self.remove_callback(PrinterCallback)  # raw log dictionaries: our own progress instead
        self.add_callback(TrainingProgress())
        self.add_callback(RestoreRunningLoss(self))
        self.resumed_from: str | None = None
        self.training_over = False  # resumed from a checkpoint taken when training ended: no step is left
        self.seconds_before = 0.0  # training seconds spent before the checkpoint this run resumed from
        self.started = 0.0
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
                [
                    {"params": params, "lr": rate, "weight_decay": self.args.weight_decay if decays else 0.0}
                    for (rate, decays), params in groups.items()
                ],
                **kwargs,
            )
        return super().create_optimizer(model)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        """The Trainer's training, resumed from `resume_from_checkpoint` when given. A checkpoint taken
        when training ended (its last step, or an early stop) only finishes the run: the best model is
        loaded and the final log line written, and no further step is trained."""
        self.resumed_from = resume_from_checkpoint
        self.training_over = bool(resume_from_checkpoint) and training_ended(Path(resume_from_checkpoint))
        if self.training_over:
            logger.info(
                "%s was taken when training ended: finishing the run (no further step)",
                Path(resume_from_checkpoint).name,
            )
        self.started = time.monotonic()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The next optimizer step's batches; none after a checkpoint taken when training ended (the
        Trainer's loop would otherwise take one step before it checks that training is over)."""
        if self.training_over:
            self.control.should_training_stop = True
            self.control.should_log = self.control.should_evaluate = self.control.should_save = False
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint plus the training loss accumulated since the last log line and the
        training seconds so far, written first (a checkpoint counts once its trainer_state.json, written
        last, exists)."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        with writing(folder, "the checkpoint"):
            if self.args.should_save:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / RUNNING_LOSS_FILE).write_text(
                    json.dumps(
                        {
                            "loss_since_log": float(self._tr_loss.item()),
                            "total_loss": self._total_loss_scalar,
                            "last_logged_step": self._globalstep_last_logged,
                            "train_seconds": self.seconds_before + time.monotonic() - self.started,
                        }
                    )
                )
            super()._save_checkpoint(model, trial)

    def restore_running_loss(self) -> None:
        """On resume, the logging state of the checkpoint, so the next logged loss averages the same
        steps as in an uninterrupted run, and the final `train_loss` and `train_runtime` cover the
        whole training, not only the steps after the resume."""
        path = Path(self.resumed_from or "") / RUNNING_LOSS_FILE
        if self.resumed_from and path.is_file():
            saved = json.loads(path.read_text())
            self._tr_loss.fill_(saved["loss_since_log"])
            self._total_loss_scalar = saved["total_loss"]
            self._globalstep_last_logged = saved["last_logged_step"]
            self._initial_global_step = 0  # the final train_loss averages every step, as uninterrupted
            self.seconds_before = saved.get("train_seconds", 0.0)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log; the end-of-training line of a resumed run counts the seconds trained
        before the resume too (its rates are per second of the whole training)."""
        if "train_runtime" in logs and self.seconds_before:
            runtime = logs["train_runtime"]
            logs["train_runtime"] = round(runtime + self.seconds_before, 4)
            for key in ("train_samples_per_second", "train_steps_per_second"):
                if key in logs:
                    logs[key] = round(logs[key] * runtime / logs["train_runtime"], 3)
        super().log(logs, start_time)

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
                inputs[key],
                targets,
                self.mixup_alpha,
                generator,
                num_labels=self.model.config.num_labels,
            )
        outputs = model(**inputs)
        loss = task_loss(outputs.logits, targets, self.multi_label)  # logits (B, C)
        # evaluation gathers the logits alone (a weighted-layer model also returns every hidden state)
        return (loss, {"logits": outputs.logits}) if return_outputs else loss


def training_ended(checkpoint: Path) -> bool:
    """True when `checkpoint` was taken as training ended: at its last step or at an early stop (the
    Trainer saves its control, `should_training_stop` set, in the checkpoint's trainer_state.json)."""
    state = json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    return bool(control.get("should_training_stop")) or 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def parameter_learning_rates(
    model, heads: list[str], layers: str | None, lr: float, head_lr: float, layer_decay: float
) -> dict[str, float]:
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
            rates[name] = lr * layer_decay ** (count - 1 - int(name[len(prefix) :].split(".")[0]))
        else:
            rates[name] = lr * layer_decay**count
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
        logger.info(
            "fine-tuning did not beat its starting point on validation %s (%.4f vs %s): keeping the start",
            key.removeprefix("eval_"),
            first,
            "none" if best is None else f"{best:.4f}",
        )
        trainer.model.load_state_dict(state)
        start["kept_start"] = True
    trainer.state.log_history.insert(0, {**start, "step": 0})
    return start


def metrics_function(label_names: list[str], multi_label: bool, aggregate: str):
    """compute_metrics for the Trainer: windows -> tracks -> scalar metrics."""

    def compute(prediction) -> dict:
        if not np.isfinite(prediction.predictions).all():  # a diverged model: say so, not scikit-learn's NaN error
            raise TrainingDiverged(
                "training diverged: the model's outputs on validation are nan/inf; try a lower "
                "train.lr or a lower train.max_grad_norm"
            )
        labels, track_index = prediction.label_ids
        metrics, _, _ = evaluate_windows(
            prediction.predictions, labels, track_index, label_names, multi_label, aggregate
        )
        return scalar_metrics(metrics)

    return compute


GPU_ENGINES = ("fsdp", "deepspeed")  # sharded training engines that accelerate only enables on GPUs


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
    logger.warning(
        "train.precision=%s does not train on this machine (%s): training in fp32, recorded as train.precision=fp32",
        asked,
        device,
    )
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, precision="fp32"))


def training_arguments(recipe: Recipe, run_dir: Path, multi_label: bool) -> TrainingArguments:
    """TrainingArguments from a recipe: one place for every Trainer setting. `train.trainer_args`
    adds any other field (and may replace the defaults below that no recipe key sets: report_to,
    use_cpu, disable_tqdm, logging_first_step, ddp_find_unused_parameters)."""
    train = recipe.train
    # Checkpoints and evaluations share one rhythm so the best checkpoint can be restored.
    strategy = "steps" if (train.eval_steps or train.save_steps) else "epoch"
    metric, greater_is_better = selection(recipe.train.metric)
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
            {
                "mode": "max" if greater_is_better else "min",
                "patience": train.plateau_patience,
                "factor": train.plateau_factor,
            }
            if plateau
            else {}
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
        logger.warning(
            "train.trainer_args.%s: accelerate ignores it on CPU processes (no GPU here); this run trains without it",
            engines[0],
        )
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

    def __init__(self, trainer: FinetuneTrainer):
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
        return {
            "args": {
                "metric": self.metric,
                "greater_is_better": self.greater,
                "patience": self.patience,
                "min_steps": self.min_steps,
            },
            "attributes": {"best": self.best, "best_step": self.best_step, "waited": self.waited},
        }

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
            logger.info(
                "early stopping at step %d: validation %s has not improved for %d evaluations (best %.4f at step %d)",
                state.global_step,
                self.key.removeprefix("eval_"),
                self.waited,
                self.best,
                self.best_step,
            )
            control.should_training_stop = True


def callbacks(recipe: Recipe, train_set) -> list:
    """The run's callbacks: the epoch to the training set, a stop in one line when training diverges,
    early stopping when asked."""
    found = [EpochToDataset(train_set), StopOnDivergence()]
    if recipe.train.early_stopping_patience:
        metric, greater = selection(recipe.train.metric)
        found.append(
            EarlyStopping(metric, greater, recipe.train.early_stopping_patience, recipe.train.early_stopping_min_steps)
        )
    return found
