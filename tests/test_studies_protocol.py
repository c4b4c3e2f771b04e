"""Adding a study is one module: a throwaway study written to a temporary module and added to
`finetune.studies.STUDIES` runs at the end of a run and in `evaluate`, and its section reaches the
report at its place in the list and the console."""

import importlib.util
import json
import shutil

from finetune import studies
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.scoring import RunModel

THROWAWAY = """
from finetune.report import Section, save_study
from finetune.studies.protocol import END_OF_RUN, EVALUATE, Study


def compute(inputs):
    predictions = inputs.predictions
    return {"tracks": len(predictions.ids), "right": int((predictions.probs.argmax(1) == predictions.labels).sum())}


def save(run_dir, result, place=None):
    section = Section("Tracks right", text=[f"{result['right']} of {result['tracks']} test tracks right"])
    save_study(run_dir, "tracks_right", section, result, place)
    return section


STUDY = Study("tracks_right", frozenset({END_OF_RUN, EVALUATE}), compute, save)
"""


def throwaway_study(tmp_path):
    module_file = tmp_path / "throwaway_study.py"
    module_file.write_text(THROWAWAY)
    spec = importlib.util.spec_from_file_location("throwaway_study", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STUDY


def test_a_study_in_a_module_of_its_own_runs_and_reaches_the_report_in_its_place(
    demo_run, tmp_path, monkeypatch, capsys
):
    durations, *rest = studies.STUDIES
    monkeypatch.setattr(studies, "STUDIES", (durations, throwaway_study(tmp_path), *rest))  # second in the report
    run_dir = tmp_path / "run"
    shutil.copytree(demo_run, run_dir)
    test = TrackPredictions.load(run_dir / "predictions" / "test.npz")
    studies.end_of_run(run_dir, dataset=RunModel(run_dir).dataset(), test=test)
    saved = json.loads((run_dir / "studies" / "tracks_right.json").read_text())
    assert saved["data"]["tracks"] == len(test.ids) and saved["place"] == 1

    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--durations", "2", "--explain", "0"]) == 0
    out = capsys.readouterr().out
    assert f"of {len(test.ids)} test tracks right" in out
    assert out.index("Tracks right") < out.index("Rare classes") < out.index("Input duration")  # asked-for last
    md = (run_dir / "report.md").read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    placed = [
        t
        for t in titles
        if t in ("Input duration", "Tracks right", "Rare classes", "Most confidently wrong test tracks")
    ]
    assert placed == ["Input duration", "Tracks right", "Rare classes", "Most confidently wrong test tracks"]
