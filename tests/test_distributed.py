"""Multi-process training (2 CPU processes, gloo) through torchrun and through `accelerate launch`:
the two processes form one job (one global batch), and write one run folder with one set of metrics."""

import json
import os
import socket
import subprocess
import sys

import pytest

PER_DEVICE_BATCH = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(name: str, port: int) -> list[str]:
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(port)]
    # Not `--cpu`: with it accelerate 1.x starts ONE process whatever --num_processes says (its
    # multi-CPU path needs mpirun). `--multi_gpu` is its torchrun-based multi-process launcher; with
    # no visible GPU each process trains on the CPU over gloo.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]


@pytest.mark.parametrize("name", ["torchrun", "accelerate"])
def test_two_processes_train_as_one_job_and_write_one_run_folder(tmp_path, synthetic_root, name):
    # info verbosity makes the Trainer print its training summary (with the total batch size).
    # No visible GPU: two ranks on one GPU would fail in NCCL; this test is about CPU processes.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "info",
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [*launcher(name, free_port()), "-m", "finetune",
         "--recipe", "demo", "train.max_steps=2", f"train.batch_size={PER_DEVICE_BATCH}",
         "data.num_workers=0", "data.max_tracks=10", f"data.root={synthetic_root}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # Two processes that each trained alone would each report the per-device batch (4).
    summaries = [line for line in output.splitlines() if "Total train batch size" in line]
    assert summaries and all(line.rstrip().endswith(f"= {2 * PER_DEVICE_BATCH}") for line in summaries), (
        "the Trainer must see a world of 2 processes:\n" + "\n".join(summaries))
    assert output.count("data.audio_cache: on") == 1, "the toolkit's progress is logged by rank 0 only"
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"both processes must agree on one run folder, got {runs}"
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["test"]["num_tracks"] == 10, "every test track scored once across processes"
    assert (runs[0] / "model" / "model.safetensors").is_file()
