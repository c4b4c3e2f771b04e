"""The Trainer's task loss, augmentation wiring, streaming, and a bad-input corpus end to end."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from finetune import recipe as recipes
from finetune.cli import main
from finetune.data import load_dataset
from finetune.run import augmenter
from finetune.training import task_loss


def test_loss_follows_the_task_not_the_model():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]])
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert task_loss(logits, multi_hot, True) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, multi_hot).item()
    )
    classes = torch.tensor([0, 1])
    assert task_loss(logits, classes, False) == pytest.approx(F.cross_entropy(logits, classes).item())
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]])  # mixup targets
    assert task_loss(logits, soft, False) == pytest.approx(F.cross_entropy(logits, soft).item())


def test_augmentation_is_off_by_default_and_changes_audio_when_on():
    assert augmenter(recipes.load("demo"), 16000) is None
    augment = augmenter(
        recipes.load("demo", ["augment.probability=1", "augment.gain_db=6", "augment.noise_snr_db=10"]), 16000
    )
    y = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
    out = augment(y, rng=np.random.default_rng(0))
    assert out.shape == y.shape and not np.allclose(out, y)
    np.testing.assert_array_equal(out, augment(y, rng=np.random.default_rng(0)))


@pytest.mark.slow
def test_streaming_with_augmentation_and_mixup_trains(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "data.streaming=true",
                "train.max_steps=2",
                "train.batch_size=4",
                "train.logging_steps=1",
                "data.max_tracks=10",
                "augment.probability=1",
                "augment.gain_db=6",
                "augment.noise_snr_db=20",
                "augment.mixup_alpha=0.4",
                "model.args.freq_mask=8",
                "model.args.time_mask=10",
                "data.audio_cache=true",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    history = json.loads((run_dir / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e][-1] == 2
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["num_tracks"] == 10


def test_streaming_needs_max_steps():
    with pytest.raises(recipes.RecipeError, match="train.max_steps"):
        recipes.load("demo", ["data.streaming=true"])


def write_bad_corpus(root):
    """Two GTZAN genres of good clips plus one of each kind of bad input."""
    sr, rng = 22050, np.random.default_rng(0)
    for genre in ("blues", "metal"):
        folder = root / "genres" / genre
        folder.mkdir(parents=True)
        for i in range(8):
            sf.write(folder / f"{genre}.{i:05d}.wav", 0.1 * rng.standard_normal(sr * 4), sr)
    bad = root / "genres" / "blues"
    (bad / "blues.00010.wav").write_bytes(b"")  # zero-byte
    (bad / "blues.00011.wav").write_text("this is not audio\n" * 50)  # non-audio
    sf.write(bad / "blues.00012.wav", np.zeros(sr * 3), sr)  # silence
    sf.write(bad / "blues.00013.wav", 0.1 * rng.standard_normal(int(0.05 * sr)), sr)  # 0.05 s
    sf.write(bad / "blues.00014.wav", 0.1 * rng.standard_normal((sr * 3, 8)), sr)  # 8 channels
    sf.write(bad / "blues.00015.wav", 0.1 * rng.standard_normal(96000 * 3), 96000)  # 96 kHz
    nan = 0.1 * rng.standard_normal(sr * 3).astype(np.float32)
    nan[sr + sr // 2 :][:100] = np.nan  # at 1.5 s: inside every 2 s crop and window
    sf.write(bad / "blues.00016.wav", nan, sr, subtype="FLOAT")  # float with NaN
    mp3 = root / "tmp.mp3"
    sf.write(mp3, 0.1 * rng.standard_normal(sr * 3), sr, format="MP3")
    (bad / "blues.00017.wav").write_bytes(mp3.read_bytes())  # wrong extension
    (bad / "blues.00018.mp3").write_bytes(mp3.read_bytes()[: len(mp3.read_bytes()) // 3])  # truncated
    mp3.unlink()


def test_bad_input_corpus_never_crashes_or_mislabels(tmp_path, caplog, capfd):
    import logging

    from finetune.clips import window_starts
    from finetune.data.audio import audio_duration, read_window
    from finetune.evaluation import TrackPredictions

    root = tmp_path / "gtzan"
    write_bad_corpus(root)
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        # group_by=none: generated clips under real GTZAN names (all blues here is one artist in Sturm's index)
        dataset = load_dataset("gtzan", str(root), split_scheme="random", seed=0, group_by="none")
    split_of = {row["id"].rsplit("/", 1)[-1]: name for name, split in dataset.items() for row in split}
    assert not {"blues.00010", "blues.00011"} & set(split_of), "zero-byte and non-audio files are dropped"
    assert "blues.00010.wav (empty file (0 bytes))" in caplog.text
    assert "blues.00011.wav (not readable as audio" in caplog.text
    # silence, 0.05 s, 8 channels, 96 kHz, NaN, MP3 bytes in a .wav, truncated MP3: headers read
    assert {f"blues.{n:05d}" for n in range(12, 19)} <= set(split_of)
    names = dataset["train"].features["label"].names
    for split in dataset.values():
        for row in split:
            assert names[row["label"]] == row["id"].rsplit("/", 1)[-1].split(".")[0], "label follows the folder"

    wrong = root / "genres" / "blues" / "blues.00017.wav"  # libsndfile sniffs the MP3 inside
    capfd.readouterr()
    starts = np.arange(0.0, 2.5, 0.05)
    assert all(read_window(wrong, 22050, start, 0.5).shape == (11025,) for start in starts)
    assert "part2_3_length" not in capfd.readouterr().err, "libmpg123 kept quiet whatever the suffix"
    for start in starts:  # the same reads without the quiet decoder do print its notes
        with sf.SoundFile(wrong) as f:
            f.seek(int(start * 22050))
            f.read(11025)
    assert "part2_3_length" in capfd.readouterr().err

    run_dir = tmp_path / "run"
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        "# bad input corpus\ndata:\n  name: gtzan\n  split_scheme: random\n  group_by: none\n"
        "  clip_seconds: 2.0\nmodel:\n  name: simple_cnn\n  args:\n    n_mels: 32\n"
    )
    caplog.clear()
    assert (
        main(
            [
                "--recipe",
                str(recipe),
                f"data.root={root}",
                f"output_dir={run_dir}",
                "train.epochs=1",
                "train.batch_size=8",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scored = {
        split: TrackPredictions.load(run_dir / "predictions" / f"{split}.npz") for split in ("validation", "test")
    }
    failing = {"blues.00016": "NaN or infinite samples", "blues.00018": "shorter than its header declares"}
    assert {"validation", "test"} & {split_of[name] for name in failing}, "the fixture covers evaluation"
    for name, cause in failing.items():  # unreadable windows: the whole file is left out or skipped
        split = split_of[name]
        assert any(name in r.getMessage() and cause in r.getMessage() for r in caplog.records), name
        if split != "train":
            assert [f for f in metrics[split]["skipped_files"] if name in f], (name, split)
            assert not [i for i in scored[split].ids if name in i], (name, split)
    for split, tracks in scored.items():
        expected = {i for i, s in split_of.items() if s == split}
        left_out = {i for i in expected if any(i in f for f in metrics[split]["skipped_files"])}
        assert {i.rsplit("/", 1)[-1] for i in tracks.ids} == expected - left_out
        assert metrics[split]["num_tracks"] == len(expected - left_out) >= 2
        for path in tracks.paths:  # no scored track has a window that could not be read
            for start in window_starts(audio_duration(path), 2.0, 2.0):
                assert len(read_window(path, 16000, start, 2.0)) > 0


def test_bad_metadata_gets_clear_errors(tmp_path):
    """Duplicate ids, a short annotation row, a missing metadata file, a root that is a file."""
    from data_fixtures import write_annotations, write_audio

    root = tmp_path / "mtat"
    for i, folder in enumerate("0cd"):
        write_audio(root / folder / f"a{i}.mp3", 1.0, 16000)
    annotations = root / "annotations_final.csv"
    write_annotations(
        annotations,
        ["1", "1", "3"],
        ["0/a0.mp3", "c/a1.mp3", "d/a2.mp3"],
        ["rock", "pop"],
        np.array([[1, 0], [0, 1], [1, 1]]),
    )
    with pytest.raises(ValueError, match="appear more than once.*e.g. 1"):
        load_dataset("mtat", str(root), tags=2)
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join(lines[:2] + ["\t".join(lines[2].split("\t")[:2])]) + "\n")
    with pytest.raises(ValueError, match="line 3: 2 fields"):
        load_dataset("mtat", str(root), tags=2)
    annotations.unlink()
    with pytest.raises(FileNotFoundError, match="annotations_final.csv not found"):
        load_dataset("mtat", str(root), tags=2)
    with pytest.raises(FileNotFoundError, match="fma_metadata/tracks.csv not found"):
        load_dataset("fma", str(root))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_dataset("gtzan", str(tmp_path / "file"))


def test_audio_cache_decodes_once_and_crops_like_the_full_decode(tmp_path, synthetic_root):
    from finetune.clips import AudioCache, CropReader
    from finetune.data.audio import AudioReadError, read_window

    path = str(next((synthetic_root / "genres" / "buzz").glob("*.wav")))
    cache = AudioCache(tmp_path / "audio", 16000)
    reader = CropReader(16000, 2.0, cache=cache)
    crop = reader.crop(path, np.random.default_rng([0, 0, 0]))
    entries = list((tmp_path / "audio").glob("*.npy"))
    assert len(entries) == 1 and crop.shape == (32000,)
    mtime = entries[0].stat().st_mtime_ns
    reader.crop(path, np.random.default_rng([0, 1, 0]))
    assert entries[0].stat().st_mtime_ns == mtime, "the second crop reads the cache"
    full = read_window(path, 16000)  # the same random start, drawn as CropReader draws it
    slack = len(full) / 16000 - 2.0
    first = int(round(np.random.default_rng([0, 0, 0]).uniform(0.0, slack) * 16000))
    np.testing.assert_allclose(crop, full[first : first + 32000], atol=2 / 32768)
    with pytest.raises(AudioReadError, match="missing.wav"):
        reader.crop(str(tmp_path / "missing.wav"), np.random.default_rng(0))


def test_audio_cache_crops_survive_a_cleared_cache(tmp_path, synthetic_root):
    """The cache remembers where an entry's samples lie; an entry removed meanwhile (a user clearing
    the cache mid-run) is decoded again, never a crash or a stale read."""
    from finetune.clips import AudioCache, CropReader

    path = str(next((synthetic_root / "genres" / "buzz").glob("*.wav")))
    cache = AudioCache(tmp_path / "audio", 16000)
    reader = CropReader(16000, 2.0, cache=cache)
    first = reader.crop(path, np.random.default_rng([0, 0, 0]))
    entry = cache.entry(path)
    entry.unlink()
    again = reader.crop(path, np.random.default_rng([0, 0, 0]))
    np.testing.assert_array_equal(again, first)
    assert entry.is_file(), "the entry was written again"
    track = cache.track(path)
    assert track.length == len(np.load(entry)) and track.read(track.length - 10, 100).shape == (10,)


def test_training_crops_take_the_index_durations_and_read_no_header(synthetic_root, monkeypatch):
    """The dataset index already holds each track's header duration: the crops use it (the same
    draws as reading the header), so DataLoader workers never read a header again."""
    import finetune.clips
    from finetune.clips import CropReader, TrainCrops
    from finetune.data.audio import audio_duration

    paths = sorted(str(p) for p in (synthetic_root / "genres" / "buzz").glob("*.wav"))[:3]
    targets = np.zeros(len(paths), dtype=np.int64)
    expected = [TrainCrops(paths, targets, CropReader(16000, 1.0))[i]["input_values"] for i in range(3)]
    durations = [audio_duration(path) for path in paths]

    def no_header_read(path):
        raise AssertionError(f"header of {path} read again")

    monkeypatch.setattr(finetune.clips, "audio_duration", no_header_read)
    crops = TrainCrops(paths, targets, CropReader(16000, 1.0), durations=durations)
    for i in range(3):
        np.testing.assert_array_equal(crops[i]["input_values"], expected[i])


def test_audio_cache_auto_follows_the_split_size_and_the_free_disk(tmp_path):
    import shutil

    from finetune.clips import AudioCache, training_cache

    def cache(setting, seconds, max_gib=4.0):
        return training_cache(setting, seconds, tmp_path / "audio", 16000, max_gib)

    gtzan, mtat = 443 * 30.0, 15_244 * 29.1  # training seconds of the standard splits
    assert isinstance(cache(None, gtzan), AudioCache) and cache(None, mtat) is None
    assert cache(None, gtzan, max_gib=0.1) is None, "the limit is data.audio_cache_max_gib"
    assert cache(None, None) is None, "streaming: durations unknown"
    assert isinstance(cache(True, mtat), AudioCache) and cache(False, 1.0) is None
    free_seconds = shutil.disk_usage(tmp_path).free / (16000 * 2)
    assert cache(None, free_seconds, max_gib=1e9) is None, "never more than half the free disk"
    assert not (tmp_path / "audio").exists(), "deciding creates nothing"


@pytest.mark.slow
def test_default_run_caches_a_small_training_split(tmp_path, caplog):
    import logging

    from finetune.clips import AudioCache, track_table
    from finetune.machine import cache_dir

    root, sr, rng = tmp_path / "gtzan", 22050, np.random.default_rng(0)
    for genre in ("blues", "metal"):
        (root / "genres" / genre).mkdir(parents=True)
        for i in range(6):
            sf.write(root / "genres" / genre / f"{genre}.{i:05d}.wav", 0.1 * rng.standard_normal(sr * 3), sr)
    recipe = tmp_path / "small.yaml"
    recipe.write_text(
        "# small\ndata:\n  name: gtzan\n  split_scheme: random\n  clip_seconds: 1.0\n"
        "model:\n  name: simple_cnn\n  args:\n    n_mels: 32\n"
    )
    args = ["--recipe", str(recipe), f"data.root={root}", "train.epochs=1", "train.batch_size=2", "data.num_workers=0"]
    paths, _ = track_table(load_dataset("gtzan", str(root), split_scheme="random", seed=0)["train"])
    cache = AudioCache(cache_dir() / "audio" / "16000", 16000)
    with caplog.at_level(logging.INFO, logger="finetune.data"):
        assert main(args + [f"output_dir={tmp_path / 'off'}", "data.audio_cache_max_gib=0"]) == 0
        assert "data.audio_cache: off" in caplog.text
        assert not any(cache.entry(path).is_file() for path in paths)
        caplog.clear()
        assert main(args + [f"output_dir={tmp_path / 'on'}"]) == 0
        assert "data.audio_cache: on" in caplog.text
    assert len(paths) >= 4 and all(cache.entry(path).is_file() for path in paths), (
        "every training file was read through the cache"
    )


def test_an_unwritable_audio_cache_falls_back_to_windows_with_one_warning(tmp_path, synthetic_root, caplog):
    import logging

    from finetune.clips import AudioCache, CropReader
    from finetune.data.audio import audio_duration, read_window

    (tmp_path / "not-a-folder").write_text("x")  # the cache folder's parent is a file
    cache = AudioCache(tmp_path / "not-a-folder" / "audio", 16000)
    reader = CropReader(16000, 2.0, cache=cache)
    paths = sorted(str(p) for p in (synthetic_root / "genres" / "buzz").glob("*.wav"))[:3]
    with caplog.at_level(logging.WARNING, logger="finetune.data"):
        crops = [reader.crop(path, np.random.default_rng([0, 0, i])) for i, path in enumerate(paths)]
    assert cache.unwritable and caplog.text.count("cannot be written") == 1
    first = read_window(paths[0], 16000)  # the first crop came from the decoded track in memory
    start = int(round(np.random.default_rng([0, 0, 0]).uniform(0.0, len(first) / 16000 - 2.0) * 16000))
    np.testing.assert_allclose(crops[0], first[start : start + 32000], atol=2 / 32768)
    for i in (1, 2):  # later crops are windows read from the files: not int16-quantised
        start = np.random.default_rng([0, 0, i]).uniform(0.0, audio_duration(paths[i]) - 2.0)
        np.testing.assert_array_equal(crops[i], read_window(paths[i], 16000, start, 2.0))


def test_the_collator_batches_like_the_extractor_when_it_passes_clips_through():
    """The baselines' extractor neither normalises nor masks: the collator stacks equal-length clips
    itself, to the same batch; anything else (clips of other lengths, normalising extractors) goes
    through the extractor."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from finetune.clips import AudioCollator

    rng = np.random.default_rng(0)
    plain = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False, return_attention_mask=False)
    normalising = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True)
    equal = [
        {"input_values": rng.standard_normal(800).astype(np.float32), "labels": i % 2, "track_index": i}
        for i in range(4)
    ]
    ragged = [{**item, "input_values": item["input_values"][: 800 - 100 * i]} for i, item in enumerate(equal)]
    for extractor in (plain, normalising):
        collator = AudioCollator(extractor, 16000)
        assert collator.passes_clips_through == (extractor is plain)
        batch = collator(equal)
        expected = extractor([item["input_values"] for item in equal], sampling_rate=16000, return_tensors="pt")
        assert set(batch) == {*expected, "labels", "track_index"}
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
        with pytest.raises(
            ValueError, match="input_values"
        ):  # unpadded clips of other lengths: the extractor's refusal
            collator(ragged)
    assert not AudioCollator(plain, 22050).passes_clips_through, "a rate mismatch is the extractor's to refuse"
