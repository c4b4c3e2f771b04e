"""Score a trained run's model again: on a dataset split, on excerpts, on any list of waveforms.

The studies re-score the test set the way the run evaluated it (its `Windowing`, through the same
`Predictor` that `predict` uses), so a study's full-length numbers equal the run's metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finetune import recipe as recipes
from finetune.clips import EvalWindows, Windowing, fit_length, task_of, track_table, unreadable_window
from finetune.console import progress
from finetune.data.audio import AudioReadError, read_window
from finetune.data.recipe_data import recipe_dataset
from finetune.evaluation import TrackPredictions, aggregate_tracks, readable_windows, track_predictions
from finetune.machine import default_workers
from finetune.models import load_model
from finetune.predict import Predictor


class RunModel(Predictor):
    """A run folder's recipe and trained model, scoring as the run evaluated."""

    def __init__(self, run_dir: str | Path, batch_size: int | None = None, device: str | None = None):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "recipe.yaml").is_file() or not (self.run_dir / "model" / "config.json").is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a run folder (needs recipe.yaml and model/)")
        self.recipe = recipes.load(str(self.run_dir / "recipe.yaml"))
        super().__init__(
            load_model(self.run_dir / "model"),
            Windowing.of_recipe(self.recipe),
            batch_size or self.recipe.train.eval_batch_size or self.recipe.train.batch_size,
            device,
        )

    @property
    def clip_seconds(self) -> float:
        return self.windowing.clip_seconds

    @property
    def hop_seconds(self) -> float:
        return self.windowing.hop

    def score(self, windows: torch.utils.data.Dataset, description: str) -> tuple[np.ndarray, np.ndarray]:
        """Items {input_values (T,), track_index} -> (window probabilities (W, C), track index (W,))."""
        workers = self.recipe.data.num_workers
        loader = torch.utils.data.DataLoader(
            windows,
            batch_size=self.batch_size,
            collate_fn=list,
            num_workers=default_workers() if workers is None else workers,
        )
        probs, tracks = [], []
        for items in progress(loader, description, unit="batches"):
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
        windows = EvalWindows(
            paths, targets, self.sample_rate, self.windowing, description=f"indexing {description} windows"
        )
        window_probs, track_index = self.score(windows, f"scoring {description}")
        keep = readable_windows(track_index)
        probs = aggregate_tracks(window_probs[keep], track_index[keep], self.windowing.aggregate)  # (N, C)
        tracks = np.unique(track_index[keep])
        return track_predictions(split_data["id"], paths, track_index, probs, targets[tracks], task_of(split_data)[0])


class Excerpts(torch.utils.data.Dataset):
    """Explicit windows (track, start, seconds) of audio files, each looped or cut to the
    model's clip length (as evaluation treats a short track); an unreadable one is marked as
    `EvalWindows` marks it (`finetune.clips.unreadable_window`)."""

    def __init__(
        self, paths: list[str], windows: list[tuple[int, float, float]], sample_rate: int, clip_seconds: float
    ):
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
