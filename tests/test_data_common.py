"""load_dataset dispatch, the header cache, and what every builder guarantees."""

import inspect
import json
import os

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio

from data_fixtures import write_annotations, write_audio
from finetune.data import DATASET_BUILDERS, DATASET_MODULES, DATASET_OPTIONS, gtzan, load_dataset, mtat, synthetic
from finetune.data.headers import scan_files
from test_data_fma import fma_root  # noqa: F401  (a fixture, used by name)


def small_gtzan(root, count=3):
    for genre in gtzan.GENRES[:2]:
        for n in range(count):
            write_audio(root / "genres" / genre / f"{genre}.{n:05d}.wav", seed=n)
    return gtzan.GENRES[:2]


def test_registry_names_builders_and_their_options():
    assert DATASET_BUILDERS["synthetic"] is synthetic.build
    assert set(DATASET_BUILDERS) == set(DATASET_MODULES)
    for name, builder in DATASET_BUILDERS.items():
        params = inspect.signature(builder).parameters
        assert list(params)[0] == "root"
        assert DATASET_OPTIONS[name] == tuple(params)[1:]
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())  # no **kwargs
    assert {"split_scheme", "allow_missing"} <= set(DATASET_OPTIONS["gtzan"])
    assert {"tags", "subset", "task"} <= set(DATASET_OPTIONS["mtat"]) | set(DATASET_OPTIONS["fma"])


def test_unknown_names_and_options_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'gtzn'; choose one of: gtzan, mtat, fma, "):
        load_dataset("gtzn", tmp_path)
    with pytest.raises(ValueError, match="no option.* subset; its options: split_scheme, seed, "):
        load_dataset("gtzan", tmp_path, subset="small")


@pytest.mark.parametrize(
    "name, options, headers_read, rows",
    [
        ("gtzan", {"split_scheme": "random", "genres": list(gtzan.GENRES[:2])}, 6, 6),
        ("mtat", {"tags": 2, "split_scheme": "pons"}, 64, 64),  # MP3s
        ("fma", {}, 5, 4),  # MP3s, one of them unreadable
    ],
)
@pytest.mark.slow
def test_building_reads_headers_only(name, options, headers_read, rows, tmp_path, monkeypatch, request):
    if name == "gtzan":
        small_gtzan(tmp_path)
        root = tmp_path
    else:
        root = request.getfixturevalue(f"{name}_root")
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))  # no header cached before

    def no_decoding(*args, **kwargs):
        raise AssertionError("an index build decoded audio")

    for method in ("read", "seek", "blocks", "buffer_read"):
        monkeypatch.setattr(sf.SoundFile, method, no_decoding)
    monkeypatch.setattr(sf, "read", no_decoding)
    monkeypatch.setattr(sf, "blocks", no_decoding)
    headers = []
    real_info = sf.info
    monkeypatch.setattr(sf, "info", lambda path, *a: headers.append(path) or real_info(path, *a))
    data = load_dataset(name, root, **options)
    assert len(headers) == headers_read and sum(len(s) for s in data.values()) == rows
    assert isinstance(data["train"].features["audio"], Audio) and not data["train"].features["audio"].decode


def test_header_cache_is_json_and_rechecks_changed_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name in ("a.wav", "b.wav"):
        write_audio(root / name)
    (root / "c.wav").write_bytes(b"")
    calls = []
    real_info = sf.info
    monkeypatch.setattr(sf, "info", lambda path, *a: calls.append(path) or real_info(path, *a))
    scan = scan_files(str(root), ["a.wav", "b.wav", "c.wav", "gone.wav"])
    assert scan.durations == {"a.wav": 0.2, "b.wav": 0.2}
    assert scan.unreadable == {"c.wav": "empty file (0 bytes)"} and scan.missing == ["gone.wav"]
    assert len(calls) == 3
    cache_files = list((tmp_path / "cache" / "headers").glob("*.json"))
    assert len(cache_files) == 1 and json.loads(cache_files[0].read_text())["root"] == str(root)
    again = scan_files(str(root), ["a.wav", "b.wav", "c.wav", "gone.wav"])
    assert again == scan and len(calls) == 3  # all from the cache
    write_audio(root / "b.wav", seconds=0.5)
    assert scan_files(str(root), ["a.wav", "b.wav"]).durations == {"a.wav": 0.2, "b.wav": 0.5}
    assert calls[3:] == [str(root / "b.wav")]


def test_files_denied_to_us_are_unreadable_not_missing(tmp_path, monkeypatch):
    for name in ("a.wav", "hidden/b.wav", "locked.wav"):
        write_audio(tmp_path / name)
    real_stat, real_access, real_info = os.stat, os.access, sf.info
    hidden, locked = str(tmp_path / "hidden" / "b.wav"), str(tmp_path / "locked.wav")

    def stat(path, *args, **kwargs):  # as if the folder "hidden" may not be searched
        if str(path) == hidden:
            raise PermissionError(13, "Permission denied", path)
        return real_stat(path, *args, **kwargs)

    def info(path, *args):  # libsndfile's answer when open() is refused
        if str(path) == locked:
            raise sf.LibsndfileError(2, f"Error opening {path!r}: ")
        return real_info(path, *args)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) != locked and real_access(path, mode))
    monkeypatch.setattr(sf, "info", info)
    scan = scan_files(str(tmp_path), ["a.wav", "hidden/b.wav", "locked.wav", "gone.wav"])
    assert scan.durations == {"a.wav": 0.2} and scan.missing == ["gone.wav"]
    assert scan.unreadable == {"hidden/b.wav": "permission denied", "locked.wav": "permission denied"}
    monkeypatch.undo()  # access granted (chmod leaves size and mtime as they were)
    assert set(scan_files(str(tmp_path), ["a.wav", "hidden/b.wav", "locked.wav"]).durations) == {
        "a.wav",
        "hidden/b.wav",
        "locked.wav",
    }


def test_unwritable_cache_only_warns(tmp_path, monkeypatch, caplog):
    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    write_audio(tmp_path / "a.wav")
    assert scan_files(str(tmp_path), ["a.wav"]).durations == {"a.wav": 0.2}
    assert "could not write the header cache" in caplog.text


def test_paths_escaping_the_root_are_rejected(tmp_path):
    write_audio(tmp_path.parent / f"{tmp_path.name}-outside.mp3", format="MP3")
    write_annotations(
        tmp_path / mtat.ANNOTATIONS, ["1"], [f"c/../../{tmp_path.name}-outside.mp3"], ["a"], np.array([[1]])
    )
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match=r"path 'c/\.\./\.\./.*' of clip 1 is not inside the dataset folder"):
        mtat.build(tmp_path, tags=1)


@pytest.mark.parametrize("multi_label", [False, True])
def test_an_empty_split_keeps_its_typed_columns(tmp_path, multi_label):
    from finetune.data.common import Clip, assemble

    write_audio(tmp_path / "a.wav")
    target = (0,) if multi_label else 0
    built = assemble(
        "test",
        str(tmp_path),
        {"train": [Clip("a", "a.wav", target)], "validation": [], "test": []},
        ["x", "y"],
        multi_label,
        False,
    )
    column = "labels" if multi_label else "label"
    for split in built.values():
        assert split.features == built["train"].features
    assert len(built["validation"]) == 0 and column in built["validation"].features
