"""What a reader needs to reproduce a run (finetune/provenance.py): run.json records the toolkit's
version (one source: finetune.__version__), the libraries' versions, the device and the git commit of
the toolkit's checkout; the report shows them; readers of older run folders key on the version."""

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import finetune
from conftest import PROJECT_ROOT
from finetune.machine import local_accelerator
from finetune.provenance import LIBRARIES, checkout, provenance
from finetune.recipe import load
from finetune.report import refresh
from finetune.rundir import IDENTITY_FILE, claim, in_use_message

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def git(folder: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


def committed_checkout(folder: Path) -> str:
    """`folder` made a git checkout with everything in it committed; returns its commit."""
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "throwaway")
    return git(folder, "rev-parse", "HEAD")


def expected_git() -> dict | None:
    """What run.json should record of this toolkit's source: asked of git here, independently."""
    try:
        top = git(PROJECT_ROOT, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.CalledProcessError):
        return None
    if Path(top).resolve() != PROJECT_ROOT.resolve():
        return None
    return {"commit": git(PROJECT_ROOT, "rev-parse", "HEAD")}


def test_one_version_source():
    """The version is written once, as finetune.__version__: pyproject.toml reads it from there (no copy of
    it), and the installed package's metadata agrees."""
    assert f'"{finetune.__version__}"' not in (PROJECT_ROOT / "pyproject.toml").read_text()
    assert importlib.metadata.version("music-finetune") == finetune.__version__


def test_checkout_records_commit_and_uncommitted_changes(tmp_path):
    (tmp_path / "code.py").write_text("x = 1\n")
    head = committed_checkout(tmp_path)
    assert checkout(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert checkout(tmp_path) == {"commit": head, "dirty": True}
    (tmp_path / "inner").mkdir()
    assert checkout(tmp_path / "inner") is None, "a folder inside someone's checkout is not a checkout of its own"
    plain = tmp_path.parent / f"{tmp_path.name}-plain"
    plain.mkdir()
    assert checkout(plain) is None


def recorded_git(source_root: Path) -> dict | None:
    """`git` of the provenance that the toolkit copied to `source_root` records, run from there."""
    code = "import json, finetune.provenance as p; print(json.dumps(p.checkout()))"
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=source_root, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(result.stdout)


def test_the_toolkit_run_from_a_checkout_records_its_commit(tmp_path):
    """A copy of the toolkit run from a throwaway git checkout records that checkout's commit; the same
    copy outside any checkout records null."""
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    for root in (outside, inside):
        shutil.copytree(PROJECT_ROOT / "finetune", root / "finetune", ignore=shutil.ignore_patterns("__pycache__"))
    head = committed_checkout(inside)
    assert recorded_git(inside) == {"commit": head, "dirty": False}
    assert recorded_git(outside) is None


def test_a_lock_holder_is_named_from_run_json_only_in_folders_of_older_versions(tmp_path):
    """Before versions were recorded, a holder did not write .lock.json and run.json's pid named it; a
    run.json that records a version names its creator, who may be long gone: it is not named."""
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"pid": 4242, "host": "elsewhere"}))
    assert "pid 4242 on elsewhere" in in_use_message(tmp_path)
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "version": "0.2.0"}))
    assert "4242" not in in_use_message(tmp_path)


def test_each_resume_records_the_code_and_machine_it_ran_on(tmp_path):
    """A resume may run another version or device than the run's start: its entry says which."""
    folder = f"output_dir={tmp_path / 'run'}"
    with claim(load("demo", [folder])):
        pass
    with claim(load("demo", [folder, "train.resume=true"])) as resumed:
        recorded = json.loads((resumed.path / IDENTITY_FILE).read_text())
    assert recorded["version"] == finetune.__version__
    entry, now = recorded["resumes"][-1], provenance()
    assert {key: entry[key] for key in now} == now


@pytest.mark.slow
def test_run_json_records_what_reproduces_the_run(demo_run):
    recorded = json.loads((demo_run / IDENTITY_FILE).read_text())
    assert recorded["version"] == finetune.__version__ == importlib.metadata.version("music-finetune")
    assert recorded["python"] == platform.python_version()
    assert recorded["libraries"] == {name: importlib.metadata.version(name) for name in LIBRARIES}
    assert set(LIBRARIES) == {"torch", "transformers", "peft", "datasets", "accelerate"}
    assert recorded["device"]["type"] == local_accelerator()
    assert recorded["device"]["count"] >= 1 and recorded["device"]["name"]
    expected = expected_git()
    if expected is None:
        assert recorded["git"] is None
    else:
        assert recorded["git"]["commit"] == expected["commit"] and isinstance(recorded["git"]["dirty"], bool)


@pytest.mark.slow
def test_the_report_shows_them(demo_run):
    recorded = json.loads((demo_run / IDENTITY_FILE).read_text())
    shown = [
        recorded["version"],
        recorded["python"],
        recorded["device"]["type"],
        recorded["device"]["name"],
        *(f"{name} {version}" for name, version in recorded["libraries"].items()),
    ]
    if recorded["git"]:
        shown.append(recorded["git"]["commit"])
    for report in ("report.md", "report.html"):
        setup = (demo_run / report).read_text().split("Setup", 1)[1].split("Metrics", 1)[0]
        assert all(text in setup for text in shown), (report, setup)


@pytest.mark.slow
def test_the_report_of_an_older_run_folder_says_it_recorded_none(demo_run, tmp_path):
    """A run folder written before versions were recorded is known by its run.json without one."""
    older = tmp_path / "older"
    shutil.copytree(demo_run, older)
    recorded = json.loads((older / IDENTITY_FILE).read_text())
    for key in ("version", "python", "libraries", "device", "git"):
        recorded.pop(key)
    (older / IDENTITY_FILE).write_text(json.dumps(recorded))
    refresh(older)
    assert "not recorded (written before finetune 0.2.0)" in (older / "report.md").read_text()
