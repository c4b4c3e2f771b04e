"""Multi-process training through torchrun (2 CPU processes, gloo): one run folder, one set of metrics."""

import json
import os
import subprocess
import sys


def test_torchrun_two_processes_write_one_run_folder(tmp_path, synthetic_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "finetune",
         "--recipe", "demo", "train.max_steps=2", "train.batch_size=4", "data.num_workers=0", "data.max_tracks=10",
         f"data.root={synthetic_root}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"both processes must agree on one run folder, got {runs}"
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["test"]["num_tracks"] == 10, "every test track scored once across processes"
    assert (runs[0] / "model" / "model.safetensors").is_file()
