"""What a study is: one frozen `Study` per study module (its `STUDY`), listed once in
`finetune.studies.STUDIES`, which `evaluate`, the end of a run and the report's order all read.

`compute(inputs)` does the work and returns a result; `save(run_dir, result, place=)` only writes it
(RUN/studies/<name>.json with its report section, and its figures) and returns the section. `when`
names the occasions it runs on; `asked_by`, an input without which it does not run (the duration
study runs only when durations are given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.evaluation import TrackPredictions
from finetune.report import Section
from finetune.scoring import RunModel

END_OF_RUN = "end of run"  # every run's end (finetune.run.write_run_folder), on its test predictions
EVALUATE = "evaluate"  # `python -m finetune evaluate RUN`, on the test split scored again
EVALUATE_ON = "evaluate --on"  # `evaluate RUN --on DATASET`: a split of another dataset instead


@dataclass
class Inputs:
    """What a study may read; each takes what it needs. Not with --on: `predictions` and `dataset`."""

    run_dir: Path
    predictions: TrackPredictions | None = None  # the run's test tracks
    dataset: Any = None  # the run's DatasetDict
    model: RunModel | None = None  # the run's model, loaded by `run_model()` when first needed
    durations: list[float] | None = None  # seconds of the duration study
    seed: int = 0  # of the duration study's random offsets
    explain: int = 0  # saliency maps of the first mistakes
    saliency_grid: tuple[int, float] = (16, 0.5)  # (mel bands, segment seconds)
    on: str | None = None  # --on: the other dataset, its `data.*` overrides, mapping file and split
    overrides: list[str] = ()
    mapping_file: str | None = None
    split: str = "test"

    def run_model(self) -> RunModel:
        if self.model is None:
            self.model = RunModel(self.run_dir)
        return self.model


@dataclass(frozen=True)
class Study:
    name: str  # its file RUN/studies/<name>.json (cross-dataset: one per dataset and split)
    when: frozenset[str]  # END_OF_RUN, EVALUATE, EVALUATE_ON
    compute: Callable[[Inputs], Any]
    save: Callable[..., Section]  # save(run_dir, result, place=): writes, returns the report section
    asked_by: str | None = None  # an `Inputs` field that must be given for it to run

    def runs(self, occasion: str, inputs: Inputs) -> bool:
        return occasion in self.when and (self.asked_by is None or bool(getattr(inputs, self.asked_by)))
