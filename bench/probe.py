"""Probe: a 13-layer probe sweep from the embedding cache vs one frozen-backbone epoch.

The frozen-backbone epoch is the toolkit's own pass of the frozen backbone over every training
window (`embed_split` with an empty cache: DataLoader, forward with all hidden states, cache write);
an epoch of training a head on a frozen backbone costs at least that forward. The sweep is what
`backbone.mode=probe` does next: read the cached train and validation embeddings and fit a head on
each of the 13 layer outputs (embeddings + 12 layers) by L-BFGS for every penalty of
`probe.weight_decays`, scoring each on validation. Target (issue 31): the whole sweep costs at most
a tenth of one backbone epoch. Every generated track is a copy of one tone, so the labels carry no
signal and the zero head is the optimum of every fit: L-BFGS stops after a few evaluations, the
cheapest case (a head on real embeddings takes tens to hundreds).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.media import GTZAN_WAV, labelled_splits, track_files
from bench.models import BASE_SPEECH, LABELS, TINY_SPEECH_12, speech_backbone
from bench.timing import Result, seconds, timed
from finetune.probe import embed_split, embedder_for, fit_head, head_modules, probe_layers, task_settings

TARGET = 0.1  # raised by issue 31 (was 1.0)


@dataclass(frozen=True)
class Size:
    model: dict
    model_name: str
    train_tracks: int
    track_seconds: float
    max_iter: int  # L-BFGS iterations per penalty, at most


SIZES = {
    False: Size(
        BASE_SPEECH,
        "HuBERT-base size (MERT-v1-95M architecture), random weights",
        train_tracks=4,
        track_seconds=20.0,
        max_iter=500,
    ),
    True: Size(TINY_SPEECH_12, "tiny 12-layer HuBERT", train_tracks=2, track_seconds=4.0, max_iter=5),
}
CLIP_SECONDS = 5.0


def run(quick: bool) -> list[Result]:
    size = SIZES[quick]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "train": track_files(root / "train", GTZAN_WAV, size.train_tracks, size.track_seconds),
            "validation": track_files(root / "validation", GTZAN_WAV, 2, CLIP_SECONDS),
            "test": track_files(root / "test", GTZAN_WAV, 1, CLIP_SECONDS),
        }
        dataset = labelled_splits(root, files, LABELS)
        recipe, bundle = speech_backbone(
            root / "backbone",
            size.model,
            "probe",
            data={"clip_seconds": CLIP_SECONDS},
            probe={"layers": "all", "max_iter": size.max_iter},
        )
        model = bundle.model.eval()
        embedder, task = embedder_for("hubert", model), task_settings(recipe, dataset["train"])
        cache = root / "embeddings"

        def embedded(name: str):
            return embed_split(recipe, dataset[name], name, bundle, embedder, cache)

        train, epoch = timed(lambda: embedded("train"))
        embedded("validation")
        layers = probe_layers(recipe.probe.layers, embedder.num_layers)

        def sweep() -> None:
            data = {name: embedded(name) for name in ("train", "validation")}
            for layer in layers:
                fit_head(
                    head_modules(model),
                    embedder,
                    data["train"].layer(layer),
                    data["train"],
                    data["validation"].layer(layer),
                    data["validation"],
                    task,
                    recipe.probe.weight_decays,
                    recipe.probe.max_iter,
                )

        sweep_seconds = seconds(sweep)
    return [
        Result(
            "probe",
            f"{len(layers)}-layer sweep x {len(recipe.probe.weight_decays)} penalties vs one frozen epoch, "
            f"{size.model_name}, {len(train.track_index)} train windows of {CLIP_SECONDS:g} s",
            sweep_seconds,
            epoch,
            "s",
            TARGET,
            higher_is_better=False,
        )
    ]
