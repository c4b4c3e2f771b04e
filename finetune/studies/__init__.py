"""`python -m finetune evaluate RUN`: a trained run's studies, each adding a section to its report.

On the run's own test split: track predictions (RUN/predictions/test.npz), rare classes, the most
confidently wrong tracks with saliency maps and, with `durations`, the input-length study. With
`on`, the cross-dataset study instead. Every study saves RUN/studies/<name>.json (+ PNG), then
report.md / report.html are rewritten.
"""

from __future__ import annotations

from pathlib import Path

from finetune import report
from finetune.studies import crossdataset, durations as duration_study, mistakes, rare
from finetune.studies.genre_maps import load_mapping
from finetune.evaluation import TrackPredictions
from finetune.report import Section
from finetune.rundir import hold
from finetune.studies.scoring import RunModel


def end_of_run(run_dir: Path, dataset, test: TrackPredictions, durations: list[float] | None,
               seed: int = 0) -> None:
    """The studies every run's report carries: rare classes, the most confident mistakes (their
    saliency maps come with `evaluate`), and the duration study when the recipe lists durations."""
    rare.save(run_dir, rare.rare_class_study(test, rare.training_counts(dataset["train"])))
    mistakes.save(run_dir, test, model=None, explain=0)
    if durations:
        result = duration_study.duration_study(RunModel(run_dir), dataset["test"], test, durations, seed)
        duration_study.save(run_dir, result)


def evaluate(run_dir: str | Path, durations: list[float] | None = None, on: str | None = None,
             overrides: list[str] = (), mapping_file: str | None = None, split: str = "test", explain: int = 3,
             seed: int = 0, batch_size: int | None = None,
             saliency_grid: tuple[int, float] = (16, 0.5)) -> list[Section]:
    """Run the studies; return their report sections."""
    run_dir = Path(run_dir)
    model = RunModel(run_dir, batch_size)
    with hold(run_dir):  # no run trains in the folder meanwhile, nor does a second `evaluate` write it
        if on:
            mapping = load_mapping(mapping_file) if mapping_file else None
            result = crossdataset.evaluate_on(run_dir, on, list(overrides), mapping, split, model)
            sections = [crossdataset.save(run_dir, result)]
        else:
            if overrides or mapping_file or split != "test":
                raise ValueError("key=value overrides, --mapping and --split describe the dataset of --on; give --on too")
            data = model.dataset()
            predictions = model.predictions(data["test"], "test")
            predictions.save(run_dir / "predictions" / "test.npz")
            counts = rare.training_counts(data["train"])
            sections = [rare.save(run_dir, rare.rare_class_study(predictions, counts)),
                        mistakes.save(run_dir, predictions, model, explain=explain, saliency_grid=saliency_grid)]
            if durations:
                result = duration_study.duration_study(model, data["test"], predictions, durations, seed)
                sections.append(duration_study.save(run_dir, result))
        report.refresh(run_dir)
    return sections
