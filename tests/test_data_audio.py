"""Audio I/O: windowed reads against full decodes, formats, channels, rates, and clear errors."""

import shutil
from functools import partial

import numpy as np
import pytest
import soundfile as sf
import soxr

from data_fixtures import write_audio
from finetune.clips import CropReader, EvalWindows, Windowing, fit_length
from finetune.data.audio import AudioReadError, audio_duration, read_window, read_windows

MTAT_CLIP = "mtat/audio/joram-moments_of_clarity-08-solipsism-59-88.mp3"
FMA_CLIP = "fma/fma_small/000/000002.mp3"
# MP3 output of libmpg123 varies by one float32 step (2**-23) with how the stream is chunked,
# even without seeking; a window one sample off would differ by ~1e-2 on these signals.
MP3_STEP = 2.0**-23


def full_decode(path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    return data.mean(axis=1), rate


@pytest.mark.parametrize(
    "name, options",
    [
        ("clip.wav", {"subtype": "PCM_16"}),
        ("clip.au", {"subtype": "PCM_16"}),
        ("clip.flac", {}),
        ("clip.ogg", {"subtype": "VORBIS"}),
        ("clip.mp3", {}),
    ],
)
def test_window_equals_span_of_full_decode(tmp_path, name, options):
    path = tmp_path / name
    write_audio(path, seconds=2.0, sample_rate=16000, channels=2, **options)
    full, rate = full_decode(path)
    window = read_window(path, rate, start=0.5, duration=0.25)
    assert window.dtype == np.float32 and window.shape == (4000,)
    tolerance = MP3_STEP if name.endswith(".mp3") else 0.0
    np.testing.assert_allclose(window, full[8000:12000], rtol=0, atol=tolerance)


def test_downmix_is_the_channel_average(tmp_path):
    path = tmp_path / "six.wav"
    data = write_audio(path, seconds=0.5, sample_rate=8000, channels=6, subtype="FLOAT")
    np.testing.assert_allclose(read_window(path, 8000), data.mean(axis=1), atol=1e-7)


def test_resampling_matches_soxr_on_the_full_file(tmp_path):
    path = tmp_path / "fast.wav"
    data = write_audio(path, seconds=1.0, sample_rate=44100, subtype="FLOAT")
    y = read_window(path, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    np.testing.assert_array_equal(y, soxr.resample(data[:, 0], 44100, 16000))


def test_short_file_returns_what_exists(tmp_path):
    path = tmp_path / "short.wav"
    write_audio(path, seconds=1.0, sample_rate=8000)
    assert read_window(path, 8000, start=0.75, duration=5.0).shape == (2000,)
    assert read_window(path, 8000, start=3.0, duration=1.0).shape == (0,)
    assert read_window(path, 8000).shape == (8000,)
    assert audio_duration(path) == 1.0


def test_bad_arguments_are_value_errors(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path)
    with pytest.raises(ValueError, match="start >= 0"):
        read_window(path, 8000, start=-1.0)
    with pytest.raises(ValueError, match="duration > 0"):
        read_window(path, 8000, duration=0.0)


def test_errors_name_the_file_and_the_cause(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("these are notes, not audio " * 20)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # header cut off mid-chunk
    cases = {
        empty: "empty file",
        text: "not readable as audio",
        cut: "not readable as audio",
        tmp_path / "absent.flac": "file not found",
    }
    for path, cause in cases.items():
        for call in (partial(audio_duration, path), partial(read_window, path, 8000)):
            with pytest.raises(AudioReadError, match=cause) as info:
                call()
            assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_nan_samples_are_an_error(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        read_window(path, 8000)


def truncated_mp3(tmp_path):
    """An MP3 whose header declares 3.0 s with only the first third of its bytes (~0.9 s)."""
    whole = tmp_path / "whole.mp3"
    write_audio(whole, seconds=3.0, sample_rate=22050)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    return cut


def test_truncated_mp3_is_an_error_not_a_short_window(tmp_path):
    path = truncated_mp3(tmp_path)
    assert audio_duration(path) == 3.0  # the header alone cannot tell
    assert read_window(path, 22050, start=0.1, duration=0.5).shape == (11025,)  # audio that exists
    message = r"shorter than its header declares \(truncated\?\)"
    for start, duration in ((0.0, 2.0), (1.5, 1.0), (0.0, None)):
        with pytest.raises(AudioReadError, match=message) as info:
            read_window(path, 22050, start, duration)
        assert str(path) in str(info.value)
    with pytest.raises(AudioReadError, match="truncated"):
        list(read_windows(path, 22050, [0.0, 1.0], 1.0))


def test_a_truncated_file_never_becomes_a_silent_crop_or_window(tmp_path):
    good, cut = tmp_path / "good.mp3", truncated_mp3(tmp_path)
    write_audio(good, seconds=3.0, sample_rate=22050)
    with pytest.raises(AudioReadError, match="truncated"):
        CropReader(22050, 2.0).crop(str(cut), np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty clip"):
        fit_length(np.zeros(0, dtype=np.float32), 100)
    windows = EvalWindows([str(good), str(cut)], np.array([0, 1]), 22050, Windowing(2.0))
    items = [windows[i] for i in range(len(windows))]
    assert [item["track_index"] for item in items] == [0, 0, -2, -2]  # -1 - track: unreadable
    assert all(item["input_values"].shape == (44100,) for item in items)
    assert [item["labels"] for item in items] == [0, 0, 1, 1]
    skipped = windows.skipped_files(np.array([item["track_index"] for item in items]))
    assert len(skipped) == 1 and str(cut) in skipped[0] and str(good) not in skipped[0]


def test_real_fma_mp3_decodes(realdata):
    path = realdata / FMA_CLIP
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 1_321_967)
    y = read_window(path, 44100)
    assert y.shape == (1_321_967,)
    full, _ = full_decode(path)
    np.testing.assert_allclose(
        read_window(path, 44100, start=10.0, duration=5.0), full[441_000:661_500], rtol=0, atol=MP3_STEP
    )
    assert read_window(path, 16000, start=10.0, duration=5.0).shape == (80_000,)


@pytest.mark.parametrize("name", ["clip.mp3", "clip.wav"])  # libsndfile sniffs MP3 bytes in a .wav
def test_real_mtat_mp3_windows_and_quiet_decoder(realdata, tmp_path, capfd, name):
    path = tmp_path / name
    shutil.copy(realdata / MTAT_CLIP, path)
    full, rate = full_decode(path)
    assert rate == 16000 and len(full) == 465_984  # 29.1 s; the header's estimate is 29.27 s
    assert audio_duration(path) == pytest.approx(29.27, abs=0.01)
    assert read_window(path, 16000).shape == (465_984,)  # an estimated length is not truncation
    for start in (0.74, 1.11, 2.22, 3.7, 28.9):  # the first four make libmpg123 print notes
        window = read_window(path, 16000, start=start, duration=3.0)
        first = int(start * 16000)
        np.testing.assert_allclose(window, full[first : first + 48000], rtol=0, atol=MP3_STEP)
    assert "part2_3_length" not in capfd.readouterr().err


def test_real_gtzan_wav_window_is_exact(realdata):
    path = realdata / "gtzan/genres/jazz/jazz.00000.wav"
    full, rate = full_decode(path)
    assert rate == 22050
    np.testing.assert_array_equal(read_window(path, 22050, start=12.5, duration=5.0), full[275_625:385_875])


def test_read_windows_through_one_handle_equals_separate_reads(tmp_path):
    for suffix in (".wav", ".mp3"):
        path = tmp_path / f"long{suffix}"
        write_audio(path, seconds=7.0, sample_rate=22050, channels=2)
        starts = [0.0, 2.0, 4.0, 4.5, 1.0]  # contiguous, then overlapping, then backwards
        together = list(read_windows(path, 16000, starts, 2.0))
        for start, window in zip(starts, together):
            # MP3 decoding differs in the last float bits with how the stream is read (see above);
            # a window off by one sample would differ by ~1e-2
            np.testing.assert_allclose(window, read_window(path, 16000, start, 2.0), atol=1e-5)
