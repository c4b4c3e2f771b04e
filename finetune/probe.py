"""Linear probes on frozen embeddings, for every model: `backbone.mode=probe`, and the head that a
fine-tune starts from with `backbone.head_init=probe` (linear probe then fine-tune, Kumar et al. 2022).

Embeddings: each track is cut into windows (`data.clip_seconds` long, every `data.eval_hop_seconds`;
training tracks without overlap), every window goes through the frozen model once, and the
time-pooled output of each layer is stored per track, float32 (L+1, W_t, D), under
`cache_dir()/embeddings/<model>-<hash of weights, config, extractor>/<rate>Hz-<clip>s-hop<hop>s/
<hash of path, size, mtime>.npy`. Later runs with the same model and windows, on any split or
cross-validation fold, read these files and run no forward pass; a file rewritten in place is
embedded again.

Head: the model's own head modules (a linear classifier, or projector + classifier), fitted
full-batch to convergence with L-BFGS on one layer's window embeddings for each L2 penalty in
`probe.weight_decays` (strongest first, each warm-started from the previous); the penalty with the
best validation score (`train.metric`, default the validation loss) is kept. A projector (H units)
-> classifier (C < H classes) is fitted with C hidden units and padded back with zeros: the same
minimum of the penalised loss (`reduced_head`), at a fraction of the cost; where a stronger penalty
shrank it to zero, a saddle, it is refitted from the model's initial head (`refit_if_saddle`). Inputs are
standardised while fitting and the scaling is folded into the head's first linear layer, so the
result is a plain head on the raw embeddings. Validation and test are scored by the same window ->
track aggregation as every other path (`finetune.evaluation.evaluate_windows`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from baselines.common import probe_features, probe_head
from finetune.backbones import family_of
from finetune.backbones.common import keep_layers
from finetune.backbones.heads import resolve_layer
from finetune.backbones.plugin import EncoderForAudioClassification, plugin_head
from finetune.backbones.wav2vec2 import speech_head
from finetune.clips import AudioCollator, EvalWindows, Windowing, task_of, track_table
from finetune.console import progress
from finetune.evaluation import evaluate_windows, scalar_metrics, track_predictions
from finetune.losses import task_loss
from finetune.machine import cache_dir, default_workers, local_accelerator
from finetune.metrics import selection
from finetune.models import ModelBundle, head_names

logger = logging.getLogger("finetune")

CACHE_VERSION = 3  # 3: one file per track, shared by every split and fold
# Config entries that do not change the embeddings: the labels, and what only the head or training reads.
CONFIG_KEYS_IGNORED = (
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "_name_or_path",
    "use_weighted_layer_sum",
    "selected_layer",
    "pooling",
    "classifier_proj_size",
    "layerdrop",
    "freq_mask",
    "time_mask",
    "num_masks",
    "dropout",
)
SPLITS = ("train", "validation", "test")
EMBEDDING_LOCK = ".embedding.lock"  # held while a windows folder's missing tracks are listed and embedded


@dataclass(frozen=True)
class Embedder:
    """What the probe needs of a model: per-layer pooled features, its head, and how to cut it."""

    layer_features: Callable  # (model, its main input (B, ...), attention_mask) -> (B, L+1, D)
    head: Callable  # (head modules, pooled (B, D)) -> logits (B, C)
    head_input: str | None  # the head's first Linear, where the standardisation folds in
    num_layers: int  # L: features hold the embeddings (0) and L layers
    cut: Callable[[nn.Module, int], nn.Module]  # the model cut after a layer, in place
    linear_chain: tuple[str, str] | None = None  # (projector, classifier): a head that is two nn.Linear in a row


def embedder_for(model_name: str, model: nn.Module) -> Embedder:
    """The Embedder of a recipe's model: a plug-in encoder, a pretrained backbone family (for `auto`,
    the checkpoint's), else a baseline (one embedding, its classifier on top)."""
    if isinstance(model, EncoderForAudioClassification):  # a plug-in encoder: its outputs are the layers
        return Embedder(
            EncoderForAudioClassification.layer_features,
            plugin_head,
            "classifier",
            model.config.num_hidden_layers,
            EncoderForAudioClassification.select_layer,
        )
    family = family_of(model_name, model)
    if family is None:
        return Embedder(probe_features, probe_head, "classifier", 0, lambda m, layer: m)
    layers = model.config.num_hidden_layers
    chain = ("projector", "classifier") if family.head is speech_head else None
    return Embedder(
        family.layer_features,
        family.head,
        family.head_input,
        layers,
        lambda m, layer: keep_layers(m, family, layer) if layer < layers else m,
        chain,
    )


def probe_layers(spec: str, num_layers: int) -> list[int]:
    """`probe.layers` (last | all | comma-separated indices) -> layer indices in [0, num_layers]."""
    if spec == "last":
        return [num_layers]
    if spec == "all":
        return list(range(num_layers + 1))
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items or not all(re.fullmatch(r"-?\d+", s) for s in items):
        raise ValueError(f"probe.layers={spec!r}: use last, all or comma-separated layer indices")
    return sorted({resolve_layer(s, num_layers) for s in items})


# --------------------------------------------------------------------------- the embedding cache


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_key(model: nn.Module, extractor, path: str) -> str:
    """Folder name of a model's embeddings: readable path + hash of the weights below the head
    (LoRA adapters excluded: they start as the identity), the config and the extractor."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in CONFIG_KEYS_IGNORED}
    heads = tuple(f"{name}." for name in head_names(model))
    h = hashlib.blake2b(digest_size=8)
    h.update(_digest(CACHE_VERSION, config, extractor.to_dict()).encode())
    for name, tensor in model.state_dict().items():
        if name.startswith(heads) or "lora_" in name:
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{path_slug(path)}-{h.hexdigest()}"


def path_slug(path: str, width: int = 60) -> str:
    """The path's last whole components that fit in `width` characters, joined by '_' (a last component
    longer than that: its end): readable in a folder name, never cut mid-word."""
    parts = [re.sub(r"[^A-Za-z0-9_.-]+", "_", part) for part in str(path).split("/") if part]
    kept = [parts.pop()[-width:]] if parts else []
    while parts and len("_".join([parts[-1], *kept])) <= width:
        kept.insert(0, parts.pop())
    return "_".join(kept)


def file_stamp(path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def track_file(folder: Path, path: str) -> Path | None:
    """Where a track's embeddings are kept (keyed by its path, size and mtime); None when the file
    cannot be opened."""
    stamp = file_stamp(path)
    return None if stamp is None else folder / f"{_digest(os.path.abspath(path), stamp)}.npy"


def unreadable_mark(file: Path) -> Path:
    """Beside a track's embeddings file: why its audio could not be read."""
    return file.with_suffix(".unreadable")


@dataclass
class Embedded:
    """One split's cached embeddings: the windows of its readable tracks, in track order."""

    files: list[Path]  # (L+1, W_t, D) per readable track
    track_index: np.ndarray  # (W,) track of each window, into `paths`
    targets: np.ndarray  # (W,) int64 or (W, C) float32
    paths: list[str]  # every track of the split
    skipped: list[str] = field(default_factory=list)  # why tracks were left out

    def layer(self, index: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(W, D) embeddings of one layer."""
        parts = [np.asarray(np.load(f, mmap_mode="r")[index]) for f in self.files]
        return torch.from_numpy(np.concatenate(parts)).to(device)

    def weighted(self, weights: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """(W, D) softmax(weights)-weighted sum of every layer (a weighted-layer model's input)."""
        share = weights.detach().float().softmax(dim=-1).cpu()
        return sum(share[i] * self.layer(i) for i in range(len(share))).to(device)


def compute_embeddings(
    model: nn.Module,
    embedder: Embedder,
    windows: EvalWindows,
    collator,
    files: list[Path],
    batch_size: int,
    workers: int,
) -> None:
    """Embed every window and write each track's (L+1, W_t, D) to `files[track]` (atomically), or
    an unreadable mark when its header or a window could not be read."""
    expected = np.bincount([t for t, _ in windows.windows], minlength=len(files))  # windows per track
    for track in np.flatnonzero(expected == 0):  # header unreadable: no window at all
        reason = next((s for s in windows.skipped if windows.paths[track] in s), "unreadable")
        unreadable_mark(files[track]).write_text(reason)
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, num_workers=workers, collate_fn=collator)
    pending: dict[int, list[np.ndarray]] = defaultdict(list)
    failed: set[int] = set()
    with torch.no_grad():
        for batch in progress(loader, "embedding windows", unit="batches"):
            mask = batch.get("attention_mask")
            features = embedder.layer_features(
                model, batch[model.main_input_name].to(device), None if mask is None else mask.to(device)
            )  # (B, L+1, D)
            features = features.float().cpu().numpy()
            for row, marked in enumerate(batch["track_index"].tolist()):
                track = marked if marked >= 0 else -1 - marked
                failed.update([track] if marked < 0 else [])
                pending[track].append(features[row])
                if len(pending[track]) < expected[track]:
                    continue
                stack = np.stack(pending.pop(track), axis=1)  # (L+1, W_t, D)
                if track in failed:
                    unreadable_mark(files[track]).write_text(f"{windows.paths[track]}: a window could not be read")
                    continue
                partial = files[track].with_name(files[track].name + f".{os.getpid()}.partial")
                with open(partial, "wb") as f:
                    np.save(f, stack)
                os.replace(partial, files[track])


def embed_split(recipe, split, name: str, bundle: ModelBundle, embedder: Embedder, folder: Path) -> Embedded:
    """A split's embeddings from the cache; the tracks not cached yet are embedded first."""
    paths, targets = track_table(split)
    windowing = Windowing.of_recipe(recipe)
    if name == "train":  # training tracks: windows end to end (up to eval.max_seconds)
        windowing = dataclasses.replace(windowing, hop_seconds=None)
    capped = "" if windowing.max_seconds is None else f"-max{windowing.max_seconds:g}s"
    windows_folder = folder / f"{bundle.sample_rate}Hz-{windowing.clip_seconds:g}s-hop{windowing.hop:g}s{capped}"
    windows_folder.mkdir(parents=True, exist_ok=True)
    files = [track_file(windows_folder, path) for path in paths]
    with FileLock(windows_folder / EMBEDDING_LOCK):  # workers of one comparison embed each track once
        todo = [
            t for t, f in enumerate(files) if f is not None and not f.is_file() and not unreadable_mark(f).is_file()
        ]
        if todo:
            logger.info("probe: embedding %d %s track(s) into %s", len(todo), name, windows_folder)
            windows = EvalWindows(
                [paths[t] for t in todo],
                targets[todo],
                bundle.sample_rate,
                windowing,
                description=f"indexing {name} windows",
            )
            workers = recipe.data.num_workers if recipe.data.num_workers is not None else default_workers()
            compute_embeddings(
                bundle.model,
                embedder,
                windows,
                AudioCollator(bundle.feature_extractor, bundle.sample_rate),
                [files[t] for t in todo],
                recipe.train.eval_batch_size or recipe.train.batch_size,
                workers,
            )
        else:
            logger.info("probe: reusing cached %s embeddings (%d tracks) in %s", name, len(paths), windows_folder)
    readable, track_index, skipped = [], [], []
    for track, (path, file) in enumerate(zip(paths, files)):
        if file is None:
            skipped.append(f"{path}: cannot open")
        elif unreadable_mark(file).is_file():
            skipped.append(unreadable_mark(file).read_text())
        else:
            readable.append(file)
            track_index += [track] * np.load(file, mmap_mode="r").shape[1]
    if not readable:
        raise ValueError(f"probe: no readable audio in the {name} split")
    if skipped:
        logger.warning("probe: left %d unreadable %s file(s) out, e.g. %s", len(skipped), name, skipped[0])
    track_index = np.asarray(track_index, dtype=np.int64)
    return Embedded(readable, track_index, targets[track_index], paths, skipped)


def cache_name(recipe) -> str:
    """The readable part of a model's cache folder: its weights' path, a plug-in's encoder, else its name
    (the folder's hash tells models apart: a plug-in's config names its encoder)."""
    return recipe.backbone.path or recipe.backbone.encoder or recipe.model.name


def embeddings_folder(model: nn.Module, bundle: ModelBundle, path: str) -> Path:
    return cache_dir() / "embeddings" / model_key(model, bundle.feature_extractor, path)


# --------------------------------------------------------------------------- fitting a head


def head_modules(model: nn.Module) -> nn.ModuleDict:
    """A trainable copy of the model's head (everything that maps pooled embeddings to logits)."""
    return nn.ModuleDict({name: copy.deepcopy(model.get_submodule(name)) for name in head_names(model)})


@dataclass
class FittedHead:
    head: nn.ModuleDict  # on the raw embeddings (standardisation folded in), on the CPU
    weight_decay: float
    score: float  # validation score by the selection metric
    log: list[dict]  # one entry per penalty tried


def standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale (D,) of training features (W, D); constant features keep scale 1."""
    mean, std = x.mean(dim=0), x.std(dim=0)
    return mean, torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))


def fold_standardisation(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make `linear` on (x - mean) / std a layer on x: W' = W / std, b' = b - W' mean (in place)."""
    with torch.no_grad():
        linear.weight.div_(std)
        linear.bias.sub_(linear.weight @ mean)


def copy_block(source: nn.Linear, target: nn.Linear) -> None:
    """`target`'s weight and bias := `source`'s on their common rows and columns, zeros elsewhere."""
    rows, cols = (min(a, b) for a, b in zip(source.weight.shape, target.weight.shape))
    with torch.no_grad():
        target.weight.zero_()[:rows, :cols] = source.weight[:rows, :cols]
        target.bias.zero_()[:rows] = source.bias[:rows]


def reduced_head(head: nn.ModuleDict, embedder: Embedder) -> nn.ModuleDict | None:
    """The head's projector (A: H x D) -> classifier (B: C x H) cut to its first k = C hidden units;
    None when the head is no such chain or C >= H. Fitting it instead is exact: the logits depend on
    B A and B b_A only, and for any orthogonal R, (R A, R b_A, B R^T) gives the same logits and
    penalty; the part of A outside B's row space (rank <= C) only adds penalty, so some minimiser of
    the full head lies in the first C rows of A and columns of B."""
    if embedder.linear_chain is None:
        return None
    projector, classifier = (head[name] for name in embedder.linear_chain)
    k = classifier.out_features
    if k >= projector.out_features:
        return None
    kind = {"device": projector.weight.device, "dtype": projector.weight.dtype}
    small = nn.ModuleDict(
        {
            embedder.linear_chain[0]: nn.Linear(projector.in_features, k, **kind),
            embedder.linear_chain[1]: nn.Linear(k, k, **kind),
        }
    )
    for name in embedder.linear_chain:
        copy_block(head[name], small[name])
    return small


def expanded_head(small: nn.ModuleDict, full: nn.ModuleDict, embedder: Embedder) -> nn.ModuleDict:
    """`full` (the model's head shapes) given a reduced head's weights, zeros in its other hidden
    units: the same logits and penalty as `small` (in place; returns `full`)."""
    for name in embedder.linear_chain:
        copy_block(small[name], full[name])
    return full


def penalised_loss(
    head: nn.ModuleDict, embedder: Embedder, x: torch.Tensor, y: torch.Tensor, multi_label: bool, weight_decay: float
) -> torch.Tensor:
    """What the probe minimises: the task loss + weight_decay / 2 * ||weights||^2 (biases unpenalised)."""
    penalty = sum(p.square().sum() for p in head.parameters() if p.ndim >= 2)
    return task_loss(embedder.head(head, x), y, multi_label) + weight_decay / 2 * penalty


def lbfgs_fit(
    head: nn.ModuleDict,
    embedder: Embedder,
    x: torch.Tensor,
    y: torch.Tensor,
    multi_label: bool,
    weight_decay: float,
    max_iter: int,
) -> None:
    """Minimise `penalised_loss` over the head's parameters, full-batch, to convergence (in place)."""
    params = [p for p in head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        loss = penalised_loss(head, embedder, x, y, multi_label, weight_decay)
        loss.backward()
        return loss

    optimiser.step(closure)


def refit_if_saddle(
    head: nn.ModuleDict,
    start: nn.ModuleDict,
    embedder: Embedder,
    x: torch.Tensor,
    y: torch.Tensor,
    multi_label: bool,
    weight_decay: float,
    max_iter: int,
) -> nn.ModuleDict:
    """A fitted projector -> classifier head, or the head fitted from `start` if that is lower. Over
    M = B A the penalised loss is loss(M) + weight_decay * ||M||_* (nuclear norm), minimal only where
    ||d loss / d M||_2 <= weight_decay; a warm start that a stronger penalty shrank to zero fails that
    yet has zero gradient (a saddle), so it would stay there."""
    logits = embedder.head(head, x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(task_loss(logits, y, multi_label), logits)
    if torch.linalg.matrix_norm(grad.T.to(x.dtype) @ x, ord=2) <= 1.01 * weight_decay:  # a nonzero minimum: at 1.0
        return head
    fresh = copy.deepcopy(start)
    lbfgs_fit(fresh, embedder, x, y, multi_label, weight_decay, max_iter)
    with torch.no_grad():
        return min((head, fresh), key=lambda h: penalised_loss(h, embedder, x, y, multi_label, weight_decay).item())


def score_windows(
    head: nn.ModuleDict, embedder: Embedder, x: torch.Tensor, data: Embedded, task: dict
) -> tuple[dict, float, np.ndarray, np.ndarray]:
    """Track-level metrics, mean window loss, track probabilities (N, C) and labels of a head on
    one split's window features (W, D)."""
    with torch.no_grad():
        logits = embedder.head(head.eval(), x).float().cpu()  # (W, C)
        loss = task_loss(logits, torch.as_tensor(data.targets), task["multi_label"]).item()
    metrics, probs, labels = evaluate_windows(
        logits.numpy(), data.targets, data.track_index, task["label_names"], task["multi_label"], task["aggregate"]
    )
    metrics["loss"] = loss
    metrics["skipped_files"] = data.skipped
    return metrics, loss, probs, labels


def fit_head(
    initial: nn.ModuleDict,
    embedder: Embedder,
    train_x: torch.Tensor,
    train: Embedded,
    validation_x: torch.Tensor,
    validation: Embedded,
    task: dict,
    weight_decays: list[float],
    max_iter: int,
) -> FittedHead:
    """The head fitted for each penalty (strongest first, warm-started), the best on validation kept;
    a projector -> classifier head in its reduced form (`reduced_head`), returned in full shapes."""
    device = train_x.device
    full = copy.deepcopy(initial).to(device).eval()  # eval: no dropout while fitting
    small = reduced_head(full, embedder)
    start = full if small is None else small
    mean, std = (
        standardiser(train_x)
        if embedder.head_input
        else (torch.zeros(train_x.shape[1], device=device), torch.ones(train_x.shape[1], device=device))
    )
    x, vx = (train_x - mean) / std, (validation_x - mean) / std
    y = torch.as_tensor(train.targets).to(device)
    best: FittedHead | None = None
    log = []
    head = copy.deepcopy(start)
    for decay in sorted(weight_decays, reverse=True):
        lbfgs_fit(head, embedder, x, y, task["multi_label"], decay, max_iter)
        if embedder.linear_chain:
            head = refit_if_saddle(head, start, embedder, x, y, task["multi_label"], decay, max_iter)
        metrics, _, _, _ = score_windows(head, embedder, vx, validation, task)
        score = metrics[task["metric"]]
        log.append({"weight_decay": decay, **{f"eval_{k}": v for k, v in scalar_metrics(metrics).items()}})
        if best is None or rank(score, task) < rank(best.score, task):
            best = FittedHead(copy.deepcopy(head), decay, score, log)
    fitted = best.head.cpu() if small is None else expanded_head(best.head, full, embedder).cpu()
    if embedder.head_input:
        fold_standardisation(fitted.get_submodule(embedder.head_input), mean.cpu(), std.cpu())
    for p in fitted.parameters():
        p.requires_grad_(False)
    return FittedHead(fitted, best.weight_decay, best.score, log)


def rank(score: float, task: dict) -> tuple[bool, float]:
    """Sort key of a validation score, best first: NaN (no positives) last, then by the metric's direction."""
    return (score != score, -score if task["greater_is_better"] else score)


def task_settings(recipe, split) -> dict:
    label_names, multi_label = task_of(split)
    metric, greater = selection(recipe.train.metric)
    return {
        "label_names": label_names,
        "multi_label": multi_label,
        "aggregate": Windowing.of_recipe(recipe).aggregate,
        "metric": metric,
        "greater_is_better": greater,
    }


# --------------------------------------------------------------------------- the two uses


@dataclass
class ProbeOutcome:
    """What a probe run produced, for `finetune.run` to write into the run folder."""

    model: nn.Module  # the exported classifier: the model cut after the best layer, with the fitted head
    results: dict  # split -> metrics
    predictions: dict  # split -> TrackPredictions
    log_history: list[dict]


def run_probe(recipe, dataset, bundle: ModelBundle) -> ProbeOutcome:
    """Probe every requested layer of the frozen model; the layer with the best validation score
    gives the exported model."""
    device = local_accelerator()
    model = bundle.model.eval().to(device)
    embedder = embedder_for(recipe.model.name, model)
    folder = embeddings_folder(model, bundle, cache_name(recipe))
    data = {name: embed_split(recipe, dataset[name], name, bundle, embedder, folder) for name in SPLITS}
    model.cpu()
    task = task_settings(recipe, dataset["train"])
    fits = {}
    for layer in probe_layers(recipe.probe.layers, embedder.num_layers):
        fits[layer] = fit_head(
            head_modules(model),
            embedder,
            data["train"].layer(layer, device),
            data["train"],
            data["validation"].layer(layer, device),
            data["validation"],
            task,
            recipe.probe.weight_decays,
            recipe.probe.max_iter,
        )
    scores = {layer: fit.score for layer, fit in fits.items()}
    best = min(scores, key=lambda layer: rank(scores[layer], task))
    fit = fits[best]
    logger.info(
        "probe: validation %s by layer: %s; best layer %d (weight decay %g)",
        task["metric"],
        ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()),
        best,
        fit.weight_decay,
    )
    results, predictions = {}, {}
    for name in ("validation", "test"):
        results[name], _, probs, labels = score_windows(fit.head, embedder, data[name].layer(best), data[name], task)
        predictions[name] = track_predictions(
            dataset[name]["id"], data[name].paths, data[name].track_index, probs, labels, task["label_names"]
        )
    results["validation"].update(
        probe_layer=best,
        probe_metric=task["metric"],
        probe_weight_decay=fit.weight_decay,
        probe_layer_scores={str(k): v for k, v in scores.items()},
    )
    exported = embedder.cut(copy.deepcopy(model), best)
    for name, module in fit.head.items():
        setattr(exported, name, module)
    log_history = [{"layer": layer, **entry} for layer, f in fits.items() for entry in f.log]
    return ProbeOutcome(exported.eval(), results, predictions, log_history)


def head_layer(model: nn.Module, embedder: Embedder) -> int:
    """The layer a model's head reads: a plug-in encoder's selected one (it keeps every layer), else
    the last the model keeps."""
    selected = getattr(model.config, "selected_layer", None)
    return selected if isinstance(selected, int) else embedder.num_layers


def probe_head_init(recipe, dataset, bundle: ModelBundle) -> dict:
    """Linear probe before fine-tuning: fit the model's new head on the frozen model's embeddings
    of the training split (penalty chosen on validation) and load it into the model, in place.
    Returns the probe's validation metrics."""
    model = bundle.model
    was_training, device = model.training, local_accelerator()
    model.eval().to(device)
    embedder = embedder_for(recipe.model.name, model)
    folder = embeddings_folder(model, bundle, cache_name(recipe))
    data = {
        name: embed_split(recipe, dataset[name], name, bundle, embedder, folder) for name in ("train", "validation")
    }
    model.cpu()
    weights = getattr(model, "layer_weights", None) if getattr(model.config, "use_weighted_layer_sum", False) else None

    def features(split: str) -> torch.Tensor:
        if weights is not None:
            return data[split].weighted(weights, device)
        return data[split].layer(head_layer(model, embedder), device)

    task = task_settings(recipe, dataset["train"])
    fit = fit_head(
        head_modules(model),
        embedder,
        features("train"),
        data["train"],
        features("validation"),
        data["validation"],
        task,
        recipe.probe.weight_decays,
        recipe.probe.max_iter,
    )
    with torch.no_grad():
        for name, module in fit.head.items():
            model.get_submodule(name).load_state_dict(module.state_dict())
    model.train(was_training)
    logger.info(
        "backbone.head_init=probe: head fitted on frozen embeddings (weight decay %g), validation %s %.4f",
        fit.weight_decay,
        task["metric"],
        fit.score,
    )
    return {"weight_decay": fit.weight_decay, task["metric"]: fit.score}
