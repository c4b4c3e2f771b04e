"""notebooks/quickstart.ipynb runs top to bottom on the generated data (so it never rots)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_executes(synthetic_root, finetune_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(finetune_cache))  # the kernel inherits it: no regeneration
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    run_dir = tmp_path / "runs" / "quickstart"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["num_tracks"] == 30
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "'accuracy':" in text and "true:" in text
    assert "image/png" in outputs[-1]["data"], "the saliency map is shown"
    assert len(list((run_dir / "explanations").glob("*.png"))) == 1
