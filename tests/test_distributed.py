"""Multi-process training (2 CPU processes, gloo) through torchrun and through `accelerate launch`:
the two processes form one job (one global batch), and write one run folder with one set of metrics."""

import json
import os
import socket
import subprocess
import sys

import pytest

from finetune import recipe as recipes
from finetune.data.recipe_data import recipe_dataset

PER_DEVICE_BATCH = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(name: str, port: int) -> list[str]:
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    # Not `--cpu`: with it accelerate 1.x starts ONE process whatever --num_processes says (its
    # multi-CPU path needs mpirun). `--multi_gpu` is its torchrun-based multi-process launcher; with
    # no visible GPU each process trains on the CPU over gloo.
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchrun", "accelerate"])
def test_two_processes_train_as_one_job_and_write_one_run_folder(tmp_path, synthetic_root, name):
    # info verbosity makes the Trainer print its training summary (with the total batch size).
    # No visible GPU: two ranks on one GPU would fail in NCCL; this test is about CPU processes.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "info", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            *launcher(name, free_port()),
            "-m",
            "finetune",
            "--recipe",
            "demo",
            "train.max_steps=2",
            f"train.batch_size={PER_DEVICE_BATCH}",
            "data.num_workers=0",
            "data.max_tracks=10",
            f"data.root={synthetic_root}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    # Two processes that each trained alone would each report the per-device batch (4).
    summaries = [line for line in output.splitlines() if "Total train batch size" in line]
    assert summaries and all(line.rstrip().endswith(f"= {2 * PER_DEVICE_BATCH}") for line in summaries), (
        "the Trainer must see a world of 2 processes:\n" + "\n".join(summaries)
    )
    assert output.count("data.audio_cache: on") == 1, "the toolkit's progress is logged by rank 0 only"
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"both processes must agree on one run folder, got {runs}"
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["test"]["num_tracks"] == 10, "every test track scored once across processes"
    assert (runs[0] / "model" / "model.safetensors").is_file()


# Run in each of 2 processes: the rows this process streams, and the crops of one pass over them.
RANK_READS = """
import json, sys
from finetune import recipe as recipes
from finetune.clips import CropReader
from finetune.data.recipe_data import recipe_dataset
from finetune.run import join_processes, training_set

root, out = sys.argv[1:3]
state = join_processes()
recipe = recipes.load("demo", ["data.streaming=true", "train.max_steps=1", f"data.root={root}", "data.crops_per_track=2"])
crops = training_set(recipe, recipe_dataset(recipe)["train"], CropReader(8000, 0.5))
paths = [row["audio"]["path"] for row in crops.rank_stream()]
items = sum(1 for _ in crops.one_pass(crops.rank_stream(), epoch=0))
with open(f"{out}/rank{state.process_index}.json", "w") as f:
    json.dump({"world": state.num_processes, "paths": paths, "items": items}, f)
"""


@pytest.mark.slow
def test_two_processes_stream_disjoint_files_whose_union_is_the_split(tmp_path, synthetic_root):
    script = tmp_path / "rank_reads.py"
    script.write_text(RANK_READS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [*launcher("torchrun", free_port()), str(script), str(synthetic_root), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reads = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    recipe = recipes.load("demo", ["data.streaming=true", "train.max_steps=1", f"data.root={synthetic_root}"])
    split = [row["audio"]["path"] for row in recipe_dataset(recipe)["train"]]
    first, second = (read["paths"] for read in reads)
    assert all(read["world"] == 2 for read in reads)
    assert not set(first) & set(second), "the two processes read disjoint files"
    assert sorted(first + second) == sorted(split), "together they read the whole split, each file once"
    assert abs(len(first) - len(second)) <= 1
    assert all(read["items"] == 2 * len(read["paths"]) for read in reads), "each row's crops, in its own process"


@pytest.mark.slow
def test_two_processes_train_from_their_own_streamed_shards(tmp_path, synthetic_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            *launcher("torchrun", free_port()),
            "-m",
            "finetune",
            "--recipe",
            "demo",
            "data.streaming=true",
            "train.max_steps=3",
            f"train.batch_size={PER_DEVICE_BATCH}",
            "data.num_workers=0",
            f"data.root={synthetic_root}",
            f"output_dir={tmp_path / 'run'}",
            "eval.durations=null",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert max(entry.get("step", 0) for entry in history) == 3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["num_tracks"] > 0
