"""`python -m finetune evaluate RUN`: a trained run's studies, each adding a section to its report.

`STUDIES` lists them once, in the order of their report sections; each is one module's `STUDY`
(`finetune.studies.protocol.Study`: name, when it runs, compute, save). At the end of every run and
with `evaluate` the studies run on the test split (`evaluate` scores it again and saves
RUN/predictions/test.npz); with `evaluate --on`, those of another dataset's split instead. Every
study saves RUN/studies/<name>.json (+ PNG), then `evaluate` rewrites report.md / report.html.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from finetune import report
from finetune.evaluation import TrackPredictions
from finetune.report import Section
from finetune.rundir import hold
from finetune.scoring import RunModel
from finetune.studies import crossdataset, durations, mistakes, rare
from finetune.studies.protocol import END_OF_RUN, EVALUATE, EVALUATE_ON, Inputs

STUDIES = (durations.STUDY, rare.STUDY, mistakes.STUDY, crossdataset.STUDY)  # in report order


def run_occasion(occasion: str, inputs: Inputs) -> list[Section]:
    """Compute and save each study of `occasion`; their sections, those every run has first, then
    those run only when asked."""
    chosen = sorted((s for s in STUDIES if s.runs(occasion, inputs)), key=lambda s: s.asked_by is not None)
    return [study.save(inputs.run_dir, study.compute(inputs), place=STUDIES.index(study)) for study in chosen]


def end_of_run(
    run_dir: Path, *, dataset, test: TrackPredictions, durations: list[float] | None = None, seed: int = 0
) -> None:
    """The studies every run's report carries: rare classes, the most confident mistakes (their
    saliency maps come with `evaluate`), and the duration study when the recipe lists durations."""
    run_occasion(END_OF_RUN, Inputs(Path(run_dir), predictions=test, dataset=dataset, durations=durations, seed=seed))


def evaluate(
    run_dir: str | Path,
    *,
    durations: list[float] | None = None,
    on: str | None = None,
    overrides: list[str] = (),
    mapping_file: str | None = None,
    split: str = "test",
    explain: int = 3,
    seed: int = 0,
    batch_size: int | None = None,
    saliency_grid: tuple[int, float] = (16, 0.5),
) -> list[Section]:
    """Run the studies; return their report sections."""
    run_dir = Path(run_dir)
    # first the lock: a run still training there is refused naming its process, and none starts meanwhile,
    # nor does a second `evaluate` write the folder (a missing folder is refused by RunModel)
    with hold(run_dir) if run_dir.is_dir() else contextlib.nullcontext():
        model = RunModel(run_dir, batch_size)
        inputs = Inputs(
            run_dir,
            model=model,
            durations=durations,
            seed=seed,
            explain=explain,
            saliency_grid=saliency_grid,
            on=on,
            overrides=overrides,
            mapping_file=mapping_file,
            split=split,
        )
        if on:
            sections = run_occasion(EVALUATE_ON, inputs)
        else:
            if overrides or mapping_file or split != "test":
                raise ValueError(
                    "key=value overrides, --mapping and --split describe the dataset of --on; give --on too"
                )
            inputs.dataset = model.dataset()
            inputs.predictions = model.predictions(inputs.dataset["test"], "test")
            inputs.predictions.save(run_dir / "predictions" / "test.npz")
            sections = run_occasion(EVALUATE, inputs)
        report.refresh(run_dir)
    return sections
