"""Faults of files, folders and disks that used to end right but read wrong: a truncated WAV read as a
shorter clip, a near-empty file given a confident label, a model folder whose config and weights
disagree, a push or a pack refused only after the work, a full disk in a library's words, folders
nobody else may read."""

import gc
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from cli_helpers import one_line_error, run_cli
from data_fixtures import write_audio
from finetune import export
from finetune.atomic import staged_folder, writing
from finetune.cli import error_line
from finetune.clips import CropReader, EvalWindows, Windowing
from finetune.data.audio import AudioReadError, audio_duration, read_window, read_windows
from finetune.data.headers import scan_files
from finetune.models import load_model

# --------------------------------------------------------------------------- audio


def truncated_wav(folder: Path) -> Path:
    """A WAV whose header declares 1.0 s of audio, cut after about 0.4 s."""
    path = folder / "cut.wav"
    write_audio(path, seconds=1.0, sample_rate=16_000, subtype="PCM_16")
    os.truncate(path, 44 + 2 * 6_400)  # the 44-byte header and 6,400 of 16,000 frames
    return path


def test_a_truncated_wav_is_an_error_on_every_path_that_reads(tmp_path):
    cut, good = truncated_wav(tmp_path), tmp_path / "good.wav"
    write_audio(good, seconds=1.0, sample_rate=16_000)
    message = r"cut\.wav: shorter than its header declares \(truncated\?\): 1\.00 s declared, the file holds 0\.40 s"
    with pytest.raises(AudioReadError, match=message):
        audio_duration(cut)
    with pytest.raises(AudioReadError, match=message):
        read_window(cut, 16_000, start=0.1, duration=0.2)  # a window the file still holds
    with pytest.raises(AudioReadError, match=message):
        list(read_windows(cut, 16_000, [0.0], 0.2))
    with pytest.raises(AudioReadError, match=message):
        CropReader(16_000, 0.2).crop(str(cut), np.random.default_rng(0))  # training
    windows = EvalWindows([str(good), str(cut)], np.array([0, 1]), 16_000, Windowing(0.5))  # evaluation
    skipped = windows.skipped_files(np.array([windows[i]["track_index"] for i in range(len(windows))]))
    assert len(skipped) == 1 and str(cut) in skipped[0] and "truncated" in skipped[0]
    scan = scan_files(str(tmp_path), ["good.wav", "cut.wav"])  # the datasets' header check
    assert list(scan.durations) == ["good.wav"] and "truncated" in scan.unreadable["cut.wav"]


@pytest.mark.slow
def test_predict_reports_a_truncated_wav_instead_of_scoring_its_rest(demo_run, tmp_path):
    cut = truncated_wav(tmp_path)
    result = run_cli("predict", "--model", demo_run, cut)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["file"] == str(cut) and "truncated" in line["error"] and "labels" not in line


@pytest.mark.slow
@pytest.mark.parametrize("samples", [1, 800])  # one sample; 0.05 s at 16 kHz, under the 0.1 s that any window needs
def test_predict_warns_about_a_file_far_shorter_than_the_window(demo_run, tmp_path, samples):
    short, normal = tmp_path / "short.wav", tmp_path / "normal.wav"
    sf.write(short, np.full(samples, 0.1, dtype=np.float32), 16_000)
    write_audio(normal, seconds=3.0, sample_rate=16_000)
    result = run_cli("predict", "--model", demo_run, short, normal)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    seconds = f"{samples / 16_000:.4f} s"
    assert warnings == [
        f"warning: {short}: {seconds} of audio, far shorter than the model's 3 s window "
        "(looped to fill it): its labels say little"
    ]
    flagged, plain = [json.loads(text) for text in result.stdout.splitlines()]
    assert flagged["file"] == str(short) and flagged["warning"] == warnings[0].removeprefix("warning: ")
    assert flagged["labels"] and "warning" not in plain


# --------------------------------------------------------------------------- model folders


@pytest.mark.slow
def test_a_config_that_disagrees_with_the_weights_on_labels_is_one_line(demo_run, tmp_path):
    folder = shutil.copytree(demo_run / "model", tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    kept = list(config["id2label"].values())[:3]
    config.update(
        id2label={str(i): name for i, name in enumerate(kept)}, label2id={name: i for i, name in enumerate(kept)}
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json has 3 labels, the weights 6"):
        load_model(folder)
    wav = tmp_path / "song.wav"
    write_audio(wav, seconds=1.0, sample_rate=16_000)
    assert one_line_error("predict", "--model", folder, wav) == (
        f"error: {folder}: config.json has 3 labels, the weights 6: restore the config.json saved with "
        "these weights (its id2label names every label)"
    )


# --------------------------------------------------------------------------- export and push


@pytest.mark.slow
def test_a_push_that_cannot_happen_is_refused_before_the_export_is_written(demo_run, tmp_path):
    target = tmp_path / "export"
    line = one_line_error("export", demo_run, "--to", target, "--push-to-hub", "not a/valid id")
    assert line.startswith("error: --push-to-hub 'not a/valid id' is not a Hub repo id (")
    assert not target.exists()
    line = one_line_error("export", demo_run, "--to", target, "--push-to-hub", "user/name", HF_HUB_OFFLINE="1")
    assert line == (
        "error: --push-to-hub user/name: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset "
        "it to push, or export without --push-to-hub and upload the folder later"
    )
    assert not target.exists()


def test_an_export_records_the_runs_id_as_the_readme_says(demo_run, tmp_path):
    folder = export.export_run(demo_run, tmp_path / "export")
    run_id = json.loads((demo_run / "run.json").read_text())["id"]
    assert json.loads((folder / export.EXPORT_MARKER).read_text()) == {"run": run_id}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "(recorded in `finetune_export.json` by the run's id from its `run.json`)" in " ".join(readme.split())


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exports_and_packs_get_the_usual_folder_mode(demo_run, tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = export.export_run(demo_run, tmp_path / "export")
        with staged_folder(tmp_path / "packed") as staging:  # pack writes its folder through it
            (staging / "README.md").write_text("packed")
    finally:
        os.umask(old)
    for written in (folder, tmp_path / "packed"):
        assert os.stat(written).st_mode & 0o777 == 0o777 & ~umask


# --------------------------------------------------------------------------- pack


PACK = ["pack", "--recipe", "demo", "data.max_tracks=4", "data.num_workers=0"]


@pytest.mark.slow
def test_pack_refuses_a_location_that_is_not_empty_before_packing(synthetic_root, tmp_path):
    taken, scratch = tmp_path / "taken", tmp_path / "scratch"
    taken.mkdir()
    scratch.mkdir()
    (taken / "notes.txt").write_text("mine")
    line = one_line_error(*PACK, f"data.root={synthetic_root}", "--to", f"file://{taken}", TMPDIR=str(scratch))
    assert line == f"error: pack: file://{taken} is not empty; choose a new location"
    assert list(scratch.iterdir()) == [], "nothing was packed"


@pytest.mark.slow
def test_pack_refuses_a_hub_upload_that_cannot_happen_before_packing(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    line = one_line_error(*PACK, "--to", "hf://datasets/user/name", HF_HUB_OFFLINE="1", TMPDIR=str(scratch))
    assert line == (
        "error: --to user/name: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to push, "
        "or pack to a folder and upload it later"
    )
    assert list(scratch.iterdir()) == [], "nothing was packed"


@pytest.mark.parametrize("value", ["-5", "0", "nan"])
def test_pack_refuses_a_shard_size_that_is_not_positive_in_the_parser(tmp_path, value):
    result = run_cli(*PACK, "--to", tmp_path / "packed", "--shard-mb", value)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert errors == [f"python -m finetune pack: error: argument --shard-mb: {value}: give a number of MB above 0"]


# --------------------------------------------------------------------------- full disks


@pytest.mark.parametrize(
    "save",
    [
        lambda path: torch.save({"w": torch.zeros(100_000)}, path),  # 400 kB
        lambda path: save_file({"w": torch.zeros(100_000)}, path),
    ],
    ids=["torch", "safetensors"],
)
def test_a_full_disk_under_a_checkpoint_write_says_so(small_disk, save):
    place = small_disk / "checkpoint-1"
    place.mkdir()
    with pytest.raises(OSError) as info:
        with writing(place, "the checkpoint"):
            save(place / "weights")
    line = error_line(info.value)
    del info  # its traceback holds torch's writer, and the file open on the disk to unmount
    gc.collect()
    assert line == f"{place}: could not write the checkpoint: No space left on device"


@pytest.mark.slow
def test_a_full_disk_while_generating_the_demo_data_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    root = small_disk / "synthetic"
    line = one_line_error(
        "--recipe", "demo", "train.max_steps=2", f"data.root={root}", f"output_dir={tmp_path / 'run'}"
    )
    assert line == f"error: {root / 'genres'}: could not write the generated dataset: No space left on device"
    assert [path for path in small_disk.rglob("*") if path.is_file()] == [], "nothing a later run would trust"
    assert not (tmp_path / "run").exists()
