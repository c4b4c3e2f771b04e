"""Inference on any length, export to a Hub-ready folder, and the upload path (to a temp folder)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from huggingface_hub import ModelCard

from finetune import export
from finetune.predict import Predictor, predict_genre

GROWTH_KB = """
import gc, sys
from finetune.predict import Predictor

def peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

predictor = Predictor.from_pretrained(sys.argv[1], batch_size=4)
predictor.predict(sys.argv[2])  # warm-up: first-call allocations, thread pools
gc.collect()
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # Linux: resets the peak RSS (VmHWM) to the current RSS
before = peak_kb()
predictor.predict(sys.argv[3])
print(peak_kb() - before)
"""


@pytest.fixture(scope="module")
def predictor(demo_run):
    return Predictor.from_pretrained(demo_run)


def tone(seconds, sr=44_100, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


def test_any_length_any_rate_any_channels(predictor, tmp_path):
    short, long = tmp_path / "short.flac", tmp_path / "long.wav"
    sf.write(short, tone(1.2, 48_000, 2), 48_000)
    sf.write(long, tone(21.0, 8_000), 8_000)
    for path, duration in ((short, 1.2), (long, 21.0)):
        result = predictor.predict(path, top_k=3, per_window=True)
        assert result["duration"] == pytest.approx(duration, abs=1e-3)
        assert len(result["labels"]) == 3
        assert result["labels"][0]["score"] >= result["labels"][1]["score"]
        assert {item["label"] for item in result["labels"]} <= set(predictor.label_names)
    assert len(result["windows"]) == 9  # 21 s in the demo's evaluation windows: 3 s every 2.5 s
    assert [w["start"] for w in result["windows"]][-2:] == [17.5, 18.0]  # the last one ends at the end
    assert sum(result["windows"][0]["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_array_input_matches_file_input(predictor, synthetic_root):
    path = next((synthetic_root / "genres" / "pulse").glob("*.wav"))
    y, sr = sf.read(path, dtype="float32")
    from_file = predictor.predict(path)["labels"]
    from_array = predictor.predict(y, sr=sr)["labels"]
    assert [item["label"] for item in from_file] == [item["label"] for item in from_array]
    np.testing.assert_allclose([item["score"] for item in from_file], [item["score"] for item in from_array], atol=1e-4)
    with pytest.raises(ValueError, match="sample rate"):
        predictor.predict(y)


def test_predict_genre_original_api(predictor, synthetic_root, demo_run):
    path = next((synthetic_root / "genres" / "bells").glob("*.wav"))
    genre, confidence = predict_genre(predictor, path)
    assert genre in predictor.label_names and 0 < confidence <= 1
    upper = [n.upper() for n in predictor.label_names]
    assert predict_genre(str(demo_run), path, upper)[0] == genre.upper()


@pytest.mark.slow
def test_cli_prints_json_lines_and_reports_bad_files(demo_run, tmp_path):
    sf.write(tmp_path / "a.wav", tone(4.0), 44_100)
    (tmp_path / "broken.mp3").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "finetune", "predict", "--model", str(demo_run), str(tmp_path), "--top-k", "2"],
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1, "a failed file makes the exit status non-zero"
    by_name = {item["file"].rsplit("/", 1)[-1]: item for item in lines}
    assert len(by_name["a.wav"]["labels"]) == 2
    assert "broken.mp3" in by_name["broken.mp3"]["error"]


@pytest.mark.slow
def test_predict_many_takes_files_folders_and_lists_and_reports_bad_files(predictor, tmp_path):
    folder, single = tmp_path / "songs", tmp_path / "single.wav"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", tone(4.0), 44_100)
    sf.write(folder / "sub" / "b.flac", tone(2.0), 44_100)
    (folder / "broken.mp3").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio")  # not an audio extension: not searched
    sf.write(single, tone(3.0), 44_100)

    results = list(predictor.predict_many(folder, top_k=2))  # searched recursively, sorted
    assert [r["file"] for r in results] == [str(folder / name) for name in ("a.wav", "broken.mp3", "sub/b.flac")]
    assert results[0] == predictor.predict(folder / "a.wav", top_k=2)
    assert results[1] == {
        "file": str(folder / "broken.mp3"),
        "error": f"cannot read audio file {folder / 'broken.mp3'}: empty file (0 bytes)",
    }
    assert list(predictor.predict_many(single)) == [predictor.predict(single)]
    mixed = list(predictor.predict_many([single, folder / "sub", tmp_path / "missing.wav"], per_window=True))
    assert [r["file"] for r in mixed] == [str(single), str(folder / "sub" / "b.flac"), str(tmp_path / "missing.wav")]
    assert "windows" in mixed[0] and "file not found" in mixed[2]["error"]


@pytest.mark.slow
def test_memory_stays_flat_for_a_ten_minute_file(demo_run, tmp_path):
    """Peak memory a prediction adds above the loaded model: the same for 30 s as for 10 min.

    The long file is 48 kHz stereo, 110 MiB as float32: decoding it whole (then windowing) adds
    ~370 MiB, against ~14 MiB for the 30 s file (measured), and would fail the 1.5x bound."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    sr = 48_000
    warm, short, long = tmp_path / "3s.wav", tmp_path / "30s.wav", tmp_path / "10min.wav"
    sf.write(warm, tone(3, sr, 2), sr)
    sf.write(short, tone(30, sr, 2), sr)  # 10 windows of 3 s: several batches of 4, as for the long file
    with sf.SoundFile(long, "w", sr, 2) as out:  # written in pieces, never whole in memory
        for _ in range(20):
            out.write(tone(30, sr, 2))
    # A fixed mmap threshold makes glibc return freed buffers at once, so the peak RSS tracks the
    # memory really in use instead of what the allocator happens to keep.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    growth = [
        int(
            subprocess.run(
                [sys.executable, "-c", GROWTH_KB, str(demo_run), str(warm), str(path)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.split()[-1]
        )
        for path in (short, long)
    ]
    assert growth[0] > 0, growth
    assert growth[1] <= 1.5 * growth[0], f"peak RSS growth in KiB, 30 s vs 10 min: {growth}"


class FolderApi:
    """Stands in for huggingface_hub.HfApi: 'uploads' into a local folder."""

    def __init__(self, root, fail=False):
        self.root, self.fail, self.created = root, fail, []

    def create_repo(self, repo_id, private, exist_ok, repo_type):
        if self.fail:
            raise ConnectionError("offline")
        self.created.append((repo_id, private))

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        import shutil

        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)


def test_export_writes_a_hub_ready_folder_with_a_card(demo_run, tmp_path):
    folder = export.export_run(demo_run, tmp_path / "export")
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "recipe.yaml"):
        assert (folder / name).is_file(), name
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "audio-classification"
    test_accuracy = json.loads((demo_run / "metrics.json").read_text())["test"]["accuracy"]
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["accuracy"] == pytest.approx(test_accuracy, abs=1e-4)
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["bells", "buzz", "drone", "harp", "pluck", "pulse"]
    assert Predictor.from_pretrained(folder).predict(tone(3.0), sr=44_100)["labels"]


def test_push_uploads_the_export_and_fails_clearly_offline(demo_run, tmp_path):
    folder = export.export_run(demo_run, tmp_path / "export")
    api = FolderApi(tmp_path / "hub")
    url = export.push_to_hub(folder, "someone/demo", private=True, api=api)
    assert url.endswith("someone/demo") and api.created == [("someone/demo", True)]
    assert sorted(p.name for p in (tmp_path / "hub" / "someone" / "demo").iterdir()) == sorted(
        p.name for p in folder.iterdir()
    )
    with pytest.raises(export.HubError, match="intact"):
        export.push_to_hub(folder, "someone/demo", api=FolderApi(tmp_path / "hub2", fail=True))
    assert (folder / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def mtat_run(mtat_root, tmp_path_factory):
    """A 2-step multi-label run on the MTAT-format fixture through the real entry point."""
    from finetune.cli import main

    run_dir = tmp_path_factory.mktemp("mtat-run") / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "data.name=mtat",
                "data.split_scheme=standard",
                f"data.root={mtat_root}",
                "data.tags=7",
                "train.max_steps=2",
                "train.batch_size=4",
                "data.num_workers=0",
                "data.max_tracks=12",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    return run_dir


def cli_labels(capsys, *argv):
    from finetune.cli import main

    capsys.readouterr()
    assert main(["predict", *argv]) == 0
    return [[item["label"] for item in json.loads(line)["labels"]] for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_tagging_run_tunes_and_predict_applies_per_tag_thresholds(mtat_run, mtat_root, capsys):
    from finetune.evaluation import TrackPredictions, tune_thresholds

    config = json.loads((mtat_run / "model" / "config.json").read_text())
    thresholds = config["tag_thresholds"]
    assert len(thresholds) == len(config["id2label"]) == 7
    assert all(0.0 <= t <= 1.0 for t in thresholds)
    validation = TrackPredictions.load(mtat_run / "predictions" / "validation.npz")
    np.testing.assert_allclose(thresholds, tune_thresholds(validation.probs, validation.labels), rtol=1e-12)
    assert "tag_thresholds" in (mtat_run / "model" / "README.md").read_text()

    predictor = Predictor.from_pretrained(mtat_run)
    np.testing.assert_allclose(predictor.tag_thresholds, thresholds)
    path = sorted(mtat_root.rglob("*.mp3"))[0]
    track = predictor.window_scores(path)[2].mean(axis=0)
    passing = {n for n, s, t in zip(predictor.label_names, track, thresholds) if s >= t}
    assert {item["label"] for item in predictor.predict(path)["labels"]} == passing
    # Thresholds straddling this file's scores: alternate tags just below / just above theirs.
    predictor.tag_thresholds = track + np.where(np.arange(7) % 2 == 0, -1e-6, 1e-6)
    result = predictor.predict(path)["labels"]
    assert [item["label"] for item in result] == [predictor.label_names[i] for i in np.argsort(-track) if i % 2 == 0]
    assert len(predictor.predict(path, top_k=2)["labels"]) == 2  # top-k caps the tags that pass
    median = float(np.median(track))
    assert {item["label"] for item in predictor.predict(path, threshold=median)["labels"]} == {
        n for n, s in zip(predictor.label_names, track) if s >= median
    }

    # The CLI: per-tag thresholds by default, --threshold overrides them, --top-k caps.
    assert set(cli_labels(capsys, "--model", str(mtat_run), str(path))[0]) == passing
    assert len(cli_labels(capsys, "--model", str(mtat_run), str(path), "--threshold", "0")[0]) == 7
    assert cli_labels(capsys, "--model", str(mtat_run), str(path), "--threshold", "1.01")[0] == []
    assert len(cli_labels(capsys, "--model", str(mtat_run), str(path), "--threshold", "0", "--top-k", "3")[0]) == 3


def test_genre_models_have_no_tag_thresholds_and_stay_top_k(demo_run, predictor):
    assert "tag_thresholds" not in json.loads((demo_run / "model" / "config.json").read_text())
    assert predictor.tag_thresholds is None
    assert len(predictor.predict(tone(3.0), sr=44_100, threshold=0.0)["labels"]) == 5  # threshold: tagging only


def test_read_ahead_produces_the_next_batch_while_the_caller_works():
    import threading

    from finetune.data.audio import AudioReadError
    from finetune.predict import read_ahead

    started = [threading.Event() for _ in range(3)]

    def batches():
        for i in range(3):
            started[i].set()
            yield i
        raise AudioReadError("long.mp3", "truncated")

    got = []
    with pytest.raises(AudioReadError, match="long.mp3"):
        for i in read_ahead(batches()):
            if i < 2:  # a sequential loop would only start the next batch after this one
                assert started[i + 1].wait(timeout=10), "the next batch is read while this one is used"
            got.append(i)
    assert got == [0, 1, 2], "in order, and the error comes after the batches before it"
