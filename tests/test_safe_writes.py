"""Folders written whole or not at all (export, pack), and one-line errors from the command line for
damaged model folders, full disks, unwritable places and inputs without audio: exit status 2, one
`error:` line naming the path, no traceback (unless --debug)."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from cli_helpers import one_line_error, run_cli
from finetune import export


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, np.zeros(16_000 * 3, dtype=np.float32), 16_000)
    return path


@pytest.fixture
def run_copy(demo_run, tmp_path):
    """A copy of the demo run, free to damage."""
    return shutil.copytree(demo_run, tmp_path / "run")


def truncate(path):
    os.truncate(path, path.stat().st_size // 2)


# --------------------------------------------------------------------------- damaged model folders


@pytest.mark.slow
def test_damaged_model_folders_get_one_line_naming_the_file_and_debug_the_traceback(run_copy, wav, tmp_path):
    weights, config = tmp_path / "weights", tmp_path / "config"
    for folder in (weights, config):
        shutil.copytree(run_copy / "model", folder)
    truncate(weights / "model.safetensors")
    (config / "config.json").write_text('{"model_type": ')
    assert one_line_error("predict", "--model", weights, wav).startswith(
        f"error: {weights}: model.safetensors is damaged ("
    )
    debug = run_cli("predict", "--model", weights, wav, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "SafetensorError" in debug.stderr
    assert one_line_error("predict", "--model", config, wav).startswith(
        f"error: {config}: config.json is damaged (not valid JSON"
    )


@pytest.mark.slow
def test_a_checkpoint_folder_is_refused_naming_the_run_folder(demo_run, wav):
    checkpoint = next(demo_run.glob("checkpoint-*"))
    assert one_line_error("predict", "--model", checkpoint, wav) == (
        f"error: {checkpoint} is a training checkpoint, not a model folder: pass the run folder {demo_run} "
        "(its model/ holds the trained model)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "evaluate", "explain"])
def test_a_run_with_damaged_weights_gets_one_line(run_copy, wav, tmp_path, command):
    truncate(run_copy / "model" / "model.safetensors")
    args = {"export": ["--to", tmp_path / "out"], "evaluate": [], "explain": [wav]}[command]
    assert f"{run_copy / 'model'}: model.safetensors is damaged" in one_line_error(command, run_copy, *args)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- predict's inputs and options


@pytest.mark.slow
def test_inputs_without_audio_are_refused_naming_them(demo_run, tmp_path):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("not audio")
    line = one_line_error("predict", "--model", demo_run, empty, notes)
    assert line.startswith("error: no audio files (") and line.endswith(f"in {empty}, {notes}")


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "--model", "RUN", "x.wav", "--top-k", "-3"],
        ["predict", "--model", "RUN", "x.wav", "--batch-size", "0"],
        ["evaluate", "RUN", "--batch-size", "0"],
    ],
)
def test_counts_below_one_are_refused_by_the_parser(args):
    result = run_cli(*args)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors == [f"python -m finetune {args[0]}: error: argument {args[-2]}: {int(args[-1])}: give at least 1"]


# --------------------------------------------------------------------------- export


@pytest.mark.slow
def test_export_refuses_a_folder_of_the_users_and_overwrite_replaces_it(demo_run, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    (target / "data.csv").write_text("1,2")
    line = one_line_error("export", demo_run, "--to", target)
    assert line.startswith(f"error: export: {target} is not empty and is not an earlier export of {demo_run}")
    assert (target / "README.md").read_text() == "my notes" and sorted(os.listdir(tmp_path)) == ["mine"]

    result = run_cli("export", demo_run, "--to", target, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not (target / "data.csv").exists() and "my notes" not in (target / "README.md").read_text()
    assert sorted(os.listdir(tmp_path)) == ["mine"], "no temporary folder left beside it"


def test_a_re_export_of_the_same_run_replaces_it_whole(demo_run, run_copy, tmp_path):
    target = tmp_path / "export"
    export.export_run(demo_run, target)
    (target / "stale.bin").write_bytes(b"old")
    assert export.export_run(demo_run, target) == target
    assert not (target / "stale.bin").exists() and (target / "model.safetensors").is_file()
    assert json.loads((target / export.EXPORT_MARKER).read_text()) == {"run": export.run_identity(demo_run)}
    moved = run_copy.rename(run_copy.with_name("moved"))  # the same run in another folder: its export is its own
    assert export.export_run(moved, target) == target
    identity = json.loads((moved / "run.json").read_text())
    (moved / "run.json").write_text(json.dumps({**identity, "id": "another-run"}))
    with pytest.raises(FileExistsError, match="is not an earlier export of"):
        export.export_run(moved, target)  # another run does not replace this export
    with pytest.raises(FileExistsError, match="would replace the run"):
        export.export_run(moved, moved / "model", overwrite=True)
    assert (moved / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_export_onto_a_full_disk_leaves_nothing_behind(demo_run, small_disk):
    target = small_disk / "export"
    assert one_line_error("export", demo_run, "--to", target) == f"error: {target}: No space left on device"
    assert list(small_disk.iterdir()) == []


# --------------------------------------------------------------------------- pack


PACK = ["pack", "--recipe", "demo", "data.max_tracks=4", "data.num_workers=0"]


@pytest.mark.slow
def test_pack_onto_a_full_disk_leaves_nothing_behind(synthetic_root, small_disk):
    target = small_disk / "packed"
    line = one_line_error(*PACK, f"data.root={synthetic_root}", "--to", target)
    assert line.startswith(f"error: {target}: ") and "No space left on device" in line
    assert list(small_disk.iterdir()) == [], "a retry is not refused as 'not empty'"


@pytest.mark.slow
def test_pack_under_a_file_names_the_path(synthetic_root, tmp_path):
    (tmp_path / "file").write_text("")
    assert (
        one_line_error(*PACK, f"data.root={synthetic_root}", "--to", tmp_path / "file" / "packed")
        == f"error: {tmp_path / 'file'}: Not a directory"
    )
