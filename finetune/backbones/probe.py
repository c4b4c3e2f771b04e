"""`backbone.mode=probe`: a frozen backbone, its embeddings cached on disk, a probe per layer.

Every window of every split goes through the backbone once; the time-pooled output of each layer
is stored as a float32 `.npy` of shape (L+1, W, D) under
`cache_dir()/embeddings/<model>-<hash of weights, config, extractor>/<data>-<split>-<hash of the
windows>.npy` (the windows' hash covers the audio paths, so the data root, split and scheme; each
file's size and modification time, so a file rewritten in place is embedded again; the sample
rate, the window length and hop). A second run with the same model and data reads these files
and runs no backbone forward pass. A probe (the model's own head: linear layers on the
pooled embedding) then trains on the cache for each layer in `probe.layers`, keeps its best
validation epoch, and the layer with the best validation score is exported: the backbone cut
after that layer plus the trained head, a native transformers model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from finetune.backbones import FAMILIES
from finetune.backbones.common import Family, keep_layers
from finetune.backbones.heads import resolve_layer
from finetune.clips import EvalWindows, task_of, track_table
from finetune.data.headers import cache_dir
from finetune.evaluation import evaluate_windows, readable_windows, scalar_metrics
from finetune.training import AudioCollator, default_metric, default_workers, task_loss

logger = logging.getLogger("finetune")

CACHE_VERSION = 2  # 2: the windows' track index is cached beside the embeddings
LABEL_KEYS = ("id2label", "label2id", "num_labels", "problem_type", "_name_or_path")


@dataclass
class Embedded:
    """One split's cached embeddings (L+1, W_all, D), of which the W windows of `rows` (the tracks
    whose every window read) are used, with each used window's track and target."""

    features: np.ndarray  # memory-mapped
    rows: np.ndarray  # (W,) used rows of `features`
    track_index: np.ndarray  # (W,)
    targets: np.ndarray  # (W,) int64 or (W, C) float32
    skipped: list[str]
    paths: list[str]  # every track's audio file; `track_index` points into it

    def layer(self, index: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(W, D) embeddings of one layer, copied out of the memory map."""
        return torch.from_numpy(np.asarray(self.features[index])[self.rows]).to(device)


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


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def model_key(model: nn.Module, extractor, path: str) -> str:
    """Folder name of a backbone's embeddings: readable path + hash of weights, config, extractor."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in LABEL_KEYS}
    h = hashlib.blake2b(digest_size=8)
    h.update(_digest(CACHE_VERSION, config, extractor.to_dict()).encode())
    for name, tensor in model.base_model.state_dict().items():  # head excluded: it never runs
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.strip("/"))[-60:]
    return f"{slug}-{h.hexdigest()}"


def file_stamp(path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def windows_key(windows: EvalWindows) -> str:
    """Hash of the windows and of every file's path, size and modification time."""
    stamps = [file_stamp(path) for path in windows.paths]
    return _digest(windows.sample_rate, windows.clip_samples, windows.paths, stamps, windows.windows,
                   windows.skipped)


def compute_embeddings(model: nn.Module, family: Family, windows: EvalWindows, collator,
                       target: Path, batch_size: int, workers: int) -> None:
    """Write every window's per-layer embeddings to `target` (L+1, W, D) and each window's track
    index as the windows came back (-1 - track: unreadable) to `tracks_file(target)`, atomically."""
    if not len(windows):
        raise ValueError(f"probe: no readable audio to embed for {target.stem}")
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collator)
    partial = target.with_name(target.name + ".partial")
    out, row, tracks = None, 0, []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"embedding {target.stem}", leave=False):
            mask = batch.get("attention_mask")
            features = family.layer_features(model, batch["input_values"].to(device),
                                             None if mask is None else mask.to(device))  # (B, L+1, D)
            if out is None:
                shape = (features.shape[1], len(windows), features.shape[2])
                out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
            out[:, row:row + len(features)] = features.transpose(0, 1).float().cpu().numpy()
            row += len(features)
            tracks.append(batch["track_index"].numpy())
    out.flush()
    del out
    np.save(tracks_file(target), np.concatenate(tracks))
    os.replace(partial, target)


def tracks_file(target: Path) -> Path:
    """Where the track index of the windows embedded into `target` is kept."""
    return target.with_name(target.stem + "-tracks.npy")


def embed_split(recipe, split, name: str, bundle, family: Family, folder: Path) -> Embedded:
    """The split's cached embeddings, computed first if this model and these windows have none."""
    paths, targets = track_table(split)
    hop = None if name == "train" else recipe.data.eval_hop_seconds  # train: non-overlapping windows
    windows = EvalWindows(paths, targets, bundle.sample_rate, recipe.data.clip_seconds, hop,
                          description=f"indexing {name} windows")
    target = folder / f"{recipe.data.name}-{name}-{windows_key(windows)}.npy"
    if target.is_file():
        logger.info("probe: reusing cached %s embeddings %s", name, target)
    else:
        logger.info("probe: embedding %d %s windows into %s", len(windows), name, target)
        workers = recipe.data.num_workers if recipe.data.num_workers is not None else default_workers()
        collator = AudioCollator(bundle.feature_extractor, bundle.sample_rate)
        compute_embeddings(bundle.model, family, windows, collator, target,
                           recipe.train.eval_batch_size or recipe.train.batch_size, workers)
    marked = np.load(tracks_file(target))  # (W_all,)
    rows = np.flatnonzero(readable_windows(marked))
    track_index = marked[rows]
    return Embedded(np.load(target, mmap_mode="r"), rows, track_index, targets[track_index],
                    windows.skipped_files(marked), windows.paths)


def head_modules(model: nn.Module) -> nn.ModuleDict:
    """A trainable copy of everything after the backbone (projector, classifier ...)."""
    return nn.ModuleDict({name: copy.deepcopy(child) for name, child in model.named_children()
                          if name != model.base_model_prefix})


def evaluate_head(head: nn.Module, family: Family, data: Embedded, layer: int,
                  task: dict) -> tuple[dict, float, np.ndarray, np.ndarray]:
    """Track-level metrics, mean loss, track probabilities (N, C) and track labels of the probe on
    one split's windows."""
    device = next(head.parameters()).device
    with torch.no_grad():
        logits = family.head(head.eval(), data.layer(layer, device)).float().cpu()  # (W, C)
        loss = task_loss(logits, torch.as_tensor(data.targets), task["multi_label"]).item()
    metrics, probs, labels = evaluate_windows(logits.numpy(), data.targets, data.track_index,
                                              task["label_names"], task["multi_label"], task["aggregate"])
    metrics["skipped_files"] = data.skipped
    return metrics, loss, probs, labels


def train_probe(recipe, family: Family, model: nn.Module, data: dict[str, Embedded], layer: int,
                task: dict) -> tuple[nn.ModuleDict, float, list[dict]]:
    """Train the head on one layer's embeddings; keep the epoch with the best validation score."""
    torch.manual_seed(recipe.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    head = head_modules(model).to(device)
    optimiser = torch.optim.AdamW(head.parameters(), lr=recipe.probe.lr,
                                  weight_decay=recipe.train.weight_decay)
    x = data["train"].layer(layer, device)  # (W, D)
    y = torch.as_tensor(data["train"].targets).to(device)  # (W,) | (W, C)
    batch, max_steps = recipe.train.batch_size, recipe.train.max_steps
    best, best_state, log, step = -math.inf, copy.deepcopy(head.state_dict()), [], 0
    for epoch in range(1, recipe.probe.epochs + 1):
        head.train()
        losses = []
        for rows in torch.randperm(len(x), device=device).split(batch):
            loss = task_loss(family.head(head, x[rows]), y[rows], task["multi_label"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            step += 1
            if 0 < max_steps <= step:
                break
        metrics, val_loss, _, _ = evaluate_head(head, family, data["validation"], layer, task)
        score = metrics[task["metric"]]
        log.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses))})
        log.append({"epoch": epoch, "step": step, "eval_loss": val_loss,
                    **{f"eval_{k}": v for k, v in scalar_metrics(metrics).items()}})
        if score > best or best == -math.inf:  # NaN scores (no positives) keep the first epoch
            best, best_state = score, copy.deepcopy(head.state_dict())
        if 0 < max_steps <= step:
            break
    head.load_state_dict(best_state)
    return head.cpu().eval(), best, log


def probe_model(model: nn.Module, family: Family, layer: int, head: nn.ModuleDict) -> nn.Module:
    """The exported classifier: a copy of the backbone cut after `layer`, with the trained head."""
    exported = copy.deepcopy(model).cpu()
    if layer < exported.config.num_hidden_layers:
        keep_layers(exported, family, layer)
    for name, module in head.items():
        setattr(exported, name, module)
    return exported.eval()


def run_probe(recipe, dataset, bundle, run_dir: Path) -> Path:
    """Probe every requested layer of the frozen backbone; write the run folder of the best (and
    push it when the recipe asks)."""
    from finetune.run import track_predictions, write_run_folder  # run.py sits above this module

    family = FAMILIES[recipe.model.name]
    model = bundle.model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    label_names, multi_label = task_of(dataset["train"])
    task = {"label_names": label_names, "multi_label": multi_label, "aggregate": recipe.eval.aggregate,
            "metric": default_metric(recipe, multi_label)}
    folder = cache_dir() / "embeddings" / model_key(model, bundle.feature_extractor,
                                                    recipe.backbone.path or family.default_path)
    folder.mkdir(parents=True, exist_ok=True)
    data = {name: embed_split(recipe, dataset[name], name, bundle, family, folder)
            for name in ("train", "validation", "test")}
    model.cpu()  # the probes train on the cache; the backbone only gets copied from here
    trained = {layer: train_probe(recipe, family, model, data, layer, task)
               for layer in probe_layers(recipe.probe.layers, model.config.num_hidden_layers)}
    scores = {layer: score for layer, (_, score, _) in trained.items()}
    best = max(scores, key=lambda layer: (scores[layer] == scores[layer], scores[layer]))  # NaN last
    logger.info("probe: validation %s by layer: %s; best layer %d", task["metric"],
                ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()), best)
    head, _, log_history = trained[best]
    results, predictions = {}, {}
    for name in ("validation", "test"):
        results[name], _, probs, labels = evaluate_head(head, family, data[name], best, task)
        predictions[name] = track_predictions(dataset[name], data[name].track_index, data[name].paths,
                                              probs, labels, label_names)
    results["validation"]["probe_layer"] = best
    results["validation"]["probe_layer_scores"] = {str(k): v for k, v in scores.items()}
    write_run_folder(run_dir, recipe, probe_model(model, family, best, head), bundle, results,
                     log_history, predictions, dataset)
    return run_dir
