"""Shared test setup: offline Hub, a private cache, the real-data folder, the generated dataset."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REALDATA = PROJECT_ROOT.parent / "shared" / "realdata"
# Fixtures that train (a run, a search, a comparison): every test that uses one is in the slow tier,
# so `pytest -m "not slow"` never pays for them. A new fixture that trains is added here.
TRAINING_FIXTURES = {
    "demo_run",
    "pruned_search",
    "vary_run",
    "one_worker",
    "evaluated_run",
    "straight",
    "finished_run",
    "finished",
    "studied_run",
    "cv_run",
    "real_probe",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata, or a skip naming why."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (it ships beside the project, not in it)")
    return REALDATA


@pytest.fixture(scope="session", autouse=True)
def finetune_cache(tmp_path_factory) -> Path:
    """Generated data and caches go to a per-session folder, never the user's cache."""
    cache = tmp_path_factory.mktemp("finetune-cache")
    os.environ["FINETUNE_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def synthetic_root(finetune_cache) -> Path:
    """The generated demo dataset, written once per test session."""
    from finetune.data import synthetic

    return synthetic.generate(finetune_cache / "synthetic")


@pytest.fixture(scope="session")
def demo_run(synthetic_root, tmp_path_factory) -> Path:
    """A 2-step run of the demo recipe through the real entry point, shared by read-only tests."""
    from finetune.cli import main

    run_dir = tmp_path_factory.mktemp("demo-run") / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "train.max_steps=2",
                "train.batch_size=4",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    return run_dir


@pytest.fixture(scope="session")
def mtat_root(tmp_path_factory) -> Path:
    """A small MagnaTagATune-format folder: generated clips as MP3s in folders 0-f and an
    annotations_final.csv in the real format, tagged by what each clip sounds like: its generated
    class, and "drums" for pulse (7 tags)."""
    import numpy as np
    import soundfile as sf

    from data_fixtures import write_annotations
    from finetune.data import synthetic

    root = tmp_path_factory.mktemp("mtat")
    tag_names = synthetic.CLASSES + ["drums"]
    rng = np.random.default_rng(0)
    clip_ids, paths, rows = [], [], []
    for n in range(64):
        name = synthetic.CLASSES[n % len(synthetic.CLASSES)]
        folder = "0123456789abcdef"[n % 16]
        path = f"{folder}/clip-{n:03d}.mp3"
        (root / folder).mkdir(exist_ok=True)
        sf.write(
            root / path,
            synthetic.make_track(name, rng)[: synthetic.SAMPLE_RATE * 4],
            synthetic.SAMPLE_RATE,
            format="MP3",
        )
        row = [tag == name for tag in synthetic.CLASSES] + [name == "pulse"]
        clip_ids.append(str(n))
        paths.append(path)
        rows.append(row)
    write_annotations(root / "annotations_final.csv", clip_ids, paths, tag_names, np.array(rows))
    return root


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: a write beyond that fails with ENOSPC, as on a full disk."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mount = shutil.which("mount")
    result = mount and subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if not result or result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up here ({result.stderr.strip() if result else 'no mount'})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)
