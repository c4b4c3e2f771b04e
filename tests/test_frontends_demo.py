"""Every front end through the public path: the demo recipe trains briefly with it, the run is
evaluated, exported and the export predicts a file; the saved model keeps its front end."""

import json

import pytest
import torch

from finetune import export, recipe as recipes
from finetune.features import FRONTENDS
from finetune.predict import Predictor
from finetune.run import run
from finetune.studies import evaluate


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory) -> dict:
    """Front end name -> a 2-step demo run with it (batch 4, 1 s crops, 12 tracks a split)."""
    folders = {}
    for name in FRONTENDS:
        folder = tmp_path_factory.mktemp(f"demo-{name}") / "run"
        folders[name] = run(
            recipes.load(
                "demo",
                [
                    f"model.args.frontend={name}",
                    "train.max_steps=2",
                    "train.batch_size=4",
                    "data.clip_seconds=1.0",
                    "data.eval_hop_seconds=1.0",
                    "data.max_tracks=12",
                    "eval.durations=null",
                    f"data.root={synthetic_root}",
                    f"output_dir={folder}",
                    "data.num_workers=0",
                ],
            )
        )
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FRONTENDS))
def test_each_front_end_trains_evaluates_exports_and_predicts(runs, name, synthetic_root, tmp_path):
    run_dir = runs[name]
    assert json.loads((run_dir / "model" / "config.json").read_text())["frontend"] == name
    assert "accuracy" in json.loads((run_dir / "metrics.json").read_text())["test"]
    assert evaluate(str(run_dir), explain=0)  # the studies' report sections
    folder = export.export_run(run_dir, tmp_path / "export")
    predictor = Predictor.from_pretrained(folder)
    assert predictor.bundle.model.config.frontend == name
    with torch.no_grad():
        spec = predictor.bundle.model.frontend.represent(torch.zeros(1, 16000))
    assert spec.shape[1] == predictor.bundle.model.frontend.bins
    result = predictor.predict(next(synthetic_root.rglob("*.wav")), top_k=6)
    assert sorted(label["label"] for label in result["labels"]) == sorted(predictor.label_names)
    assert sum(label["score"] for label in result["labels"]) == pytest.approx(1.0, abs=1e-3)
