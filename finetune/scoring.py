"""Score a trained run's model again: on a dataset split, on excerpts, on any list of waveforms.

The studies re-score the test set the way the run evaluated it (windows of the training clip
length, averaged per track), so a study's full-length numbers equal the run's metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from finetune import recipe as recipes
from finetune.clips import EvalWindows, fit_length, task_of, track_table, unreadable_window
from finetune.data.recipe_data import recipe_dataset
from finetune.data.audio import AudioReadError, read_window
from finetune.evaluation import TrackPredictions, aggregate_tracks, readable_windows, window_probabilities
from finetune.models import ModelBundle, load_model
from finetune.training import default_workers


class RunModel:
    """A run folder's recipe and trained model, ready to score waveforms."""

    def __init__(self, run_dir: str | Path, batch_size: int | None = None, device: str | None = None):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "recipe.yaml").is_file() or not (self.run_dir / "model" / "config.json").is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a run folder (needs recipe.yaml and model/)")
        self.recipe = recipes.load(str(self.run_dir / "recipe.yaml"))
        self.bundle: ModelBundle = load_model(self.run_dir / "model")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = self.bundle.model.to(self.device).eval()
        self.batch_size = batch_size or self.recipe.train.eval_batch_size or self.recipe.train.batch_size
        config = self.model.config
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    @property
    def clip_seconds(self) -> float:
        return self.recipe.data.clip_seconds

    @property
    def hop_seconds(self) -> float:
        return self.recipe.data.eval_hop_seconds or self.recipe.data.clip_seconds

    @torch.no_grad()
    def probabilities(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Waveforms at `sample_rate`, each (T,) -> probabilities (B, C)."""
        inputs = self.bundle.feature_extractor(waveforms, sampling_rate=self.sample_rate, return_tensors="pt")
        logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits  # (B, C)
        return window_probabilities(logits.float().cpu().numpy(), self.multi_label)

    def score(self, windows: torch.utils.data.Dataset, description: str) -> tuple[np.ndarray, np.ndarray]:
        """Items {input_values (T,), track_index} -> (window probabilities (W, C), track index (W,))."""
        workers = self.recipe.data.num_workers
        loader = torch.utils.data.DataLoader(windows, batch_size=self.batch_size, collate_fn=list,
                                             num_workers=default_workers() if workers is None else workers)
        probs, tracks = [], []
        for items in tqdm(loader, desc=description, leave=False):
            probs.append(self.probabilities([item["input_values"] for item in items]))
            tracks += [item["track_index"] for item in items]
        return np.concatenate(probs), np.asarray(tracks)

    def dataset(self, recipe=None):
        """The run's DatasetDict, or the one `recipe` describes."""
        recipe = recipe or self.recipe
        return recipe_dataset(recipe)

    def predictions(self, split_data, description: str) -> TrackPredictions:
        """Track-level predictions on a dataset split, windowed as the run evaluated."""
        paths, targets = track_table(split_data)
        windows = EvalWindows(paths, targets, self.sample_rate, self.clip_seconds, self.hop_seconds,
                              description=f"indexing {description} windows")
        window_probs, track_index = self.score(windows, f"scoring {description}")
        keep = readable_windows(track_index)
        window_probs, track_index = window_probs[keep], track_index[keep]
        tracks = np.unique(track_index)
        probs = aggregate_tracks(window_probs, track_index, self.recipe.eval.aggregate)
        ids = split_data["id"]
        return TrackPredictions(ids=[ids[t] for t in tracks], paths=[paths[t] for t in tracks],
                                probs=probs, labels=targets[tracks], label_names=task_of(split_data)[0])


class Excerpts(torch.utils.data.Dataset):
    """Explicit windows (track, start, seconds) of audio files, each looped or cut to the
    model's clip length (as evaluation treats a short track); an unreadable one is marked as
    `EvalWindows` marks it (`finetune.clips.unreadable_window`)."""

    def __init__(self, paths: list[str], windows: list[tuple[int, float, float]], sample_rate: int,
                 clip_seconds: float):
        self.paths, self.windows, self.sample_rate = paths, windows, sample_rate
        self.clip_samples = int(round(clip_seconds * sample_rate))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        track, start, seconds = self.windows[index]
        try:
            y = read_window(self.paths[track], self.sample_rate, start, seconds)  # (T,)
        except AudioReadError:
            return unreadable_window(track, self.clip_samples)
        return {"input_values": fit_length(y, self.clip_samples), "track_index": track}
