"""`pip install .` works: the wheel carries the packaged recipes, and the installed copy, run from a
folder that is not the checkout, lists them, validates the demo and trains it for two steps.

Offline: the wheel is built without build isolation and installed without dependencies into a
folder of its own; torch and the rest come from the environment running the tests."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from finetune import recipe as recipes

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; unless it succeeds, fail showing its output."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the project. It is built from a copy of what the build reads (pyproject.toml, the
    readme, the package folders): an in-tree build would write build/ and egg-info into the
    checkout, and setuptools packs whatever build/lib still holds, deleted modules included."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    for package in (p.parent for p in PROJECT_ROOT.glob("*/__init__.py")):
        shutil.copytree(package, source / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        tmp / "dist",
        source,
    )
    (built,) = (tmp / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A folder the wheel is installed into, put first on PYTHONPATH by `away`. Not a venv with
    --system-site-packages: run from a venv, that would see the base Python's packages, not the
    torch and the rest this environment has."""
    target = tmp_path_factory.mktemp("installed")
    run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel)
    return target


@pytest.fixture
def away(installed, tmp_path, finetune_cache) -> dict:
    """subprocess.run arguments for a command run in a folder that is not the checkout, with the
    installed copy first on the path and the session's cache (the demo data is generated there once)."""
    env = {**os.environ, "PYTHONPATH": str(installed), "FINETUNE_CACHE": str(finetune_cache), "HF_HUB_OFFLINE": "1"}
    return {"cwd": tmp_path, "env": env}


def test_the_wheel_is_the_renamed_distribution_with_every_recipe(wheel):
    assert wheel.name.startswith("music_finetune-"), "'finetune' is taken on PyPI"
    shipped = {Path(n).stem for n in zipfile.ZipFile(wheel).namelist() if n.startswith("finetune/recipes/")}
    assert shipped == set(recipes.packaged_recipes())


@pytest.mark.slow
def test_the_installed_copy_is_imported_not_the_checkout(installed, away):
    # This environment may hold an editable install of the checkout: the installed copy must win.
    printed = run(
        sys.executable, "-c", "import finetune, baselines; print(finetune.__file__); print(baselines.__file__)", **away
    ).stdout.split()
    for path in printed:
        assert Path(path).is_relative_to(installed), path


def test_the_console_script_lists_the_packaged_recipes(installed, away):
    listed = run(installed / "bin" / "finetune", "recipes", **away).stdout.splitlines()
    assert [line.split()[0] for line in listed] == list(recipes.packaged_recipes())


@pytest.mark.slow
@pytest.mark.usefixtures("synthetic_root")  # generated once per session, in the cache `away` passes on
def test_the_demo_validates_and_runs_two_steps(away, tmp_path):
    python = [sys.executable, "-m", "finetune", "--recipe", "demo"]
    printed = yaml.safe_load(run(*python, "--dry-run", **away).stdout)
    assert printed["name"] == "demo"
    run_dir = tmp_path / "run"
    run(*python, "train.max_steps=2", "train.batch_size=4", "data.num_workers=0", f"output_dir={run_dir}", **away)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
