"""Probe: a 13-layer probe sweep from the embedding cache vs one frozen-backbone epoch.

The frozen-backbone epoch is the toolkit's own pass of the frozen backbone over every training
window (`embed_split` with an empty cache: DataLoader, forward with all hidden states, cache write);
an epoch of training a head on a frozen backbone costs at least that forward. The sweep is what
`backbone.mode=probe` does next: read the cached train and validation embeddings and train a probe
on each of the 13 layer outputs (embeddings + 12 layers) for `probe.epochs` epochs, validating every
epoch. Target (ours; issue 8 sets none): the whole sweep costs less than one backbone epoch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.media import GTZAN_WAV, labelled_splits, track_files
from bench.models import BASE_SPEECH, LABELS, TINY_SPEECH_12, speech_backbone
from bench.timing import Result, seconds, timed
from finetune.backbones import FAMILIES
from finetune.backbones.probe import embed_split, probe_layers, train_probe
from finetune.training import default_metric

TARGET = 1.0


@dataclass(frozen=True)
class Size:
    model: dict
    model_name: str
    train_tracks: int
    track_seconds: float
    probe_epochs: int


SIZES = {False: Size(BASE_SPEECH, "HuBERT-base size (MERT-v1-95M architecture), random weights",
                     train_tracks=4, track_seconds=20.0, probe_epochs=30),
         True: Size(TINY_SPEECH_12, "tiny 12-layer HuBERT", train_tracks=2, track_seconds=4.0,
                    probe_epochs=2)}
CLIP_SECONDS = 5.0


def run(quick: bool) -> list[Result]:
    size = SIZES[quick]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {"train": track_files(root / "train", GTZAN_WAV, size.train_tracks, size.track_seconds),
                 "validation": track_files(root / "validation", GTZAN_WAV, 2, CLIP_SECONDS),
                 "test": track_files(root / "test", GTZAN_WAV, 1, CLIP_SECONDS)}
        dataset = labelled_splits(root, files, LABELS)
        recipe, bundle = speech_backbone(
            root / "backbone", size.model, "probe", data={"clip_seconds": CLIP_SECONDS},
            probe={"layers": "all", "epochs": size.probe_epochs})
        family, model = FAMILIES["hubert"], bundle.model.eval()
        task = {"label_names": LABELS, "multi_label": False, "aggregate": recipe.eval.aggregate,
                "metric": default_metric(recipe, False)}
        cache = root / "embeddings"
        cache.mkdir()

        def embedded(name: str):
            return embed_split(recipe, dataset[name], name, bundle, family, cache)

        train, epoch = timed(lambda: embedded("train"))
        embedded("validation")
        layers = probe_layers(recipe.probe.layers, model.config.num_hidden_layers)

        def sweep() -> None:
            data = {name: embedded(name) for name in ("train", "validation")}
            for layer in layers:
                train_probe(recipe, family, model, data, layer, task)

        sweep_seconds = seconds(sweep)
    return [Result("probe", f"{len(layers)}-layer sweep x {size.probe_epochs} epochs vs one frozen epoch, "
                   f"{size.model_name}, {len(train.track_index)} train windows of {CLIP_SECONDS:g} s",
                   sweep_seconds, epoch, "s", TARGET, higher_is_better=False)]
