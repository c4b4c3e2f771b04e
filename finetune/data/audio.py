"""Audio file I/O: header checks and windowed reads (soundfile seek + soxr resample, mono).

Only the requested window is decoded: soundfile seeks sample-exactly in WAV/AU/FLAC/OGG/MP3.
Every failure is an `AudioReadError` naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")  # formats soundfile reads
# Audio formats libsndfile does not read (AAC, ALAC, WMA, AC-3 ... in MP4, ASF, Matroska containers):
# `finetune.data.common.check_formats` refuses them with the command that converts them.
UNSUPPORTED_EXTENSIONS = (
    ".m4a",
    ".aac",
    ".alac",
    ".mp4",
    ".m4b",
    ".wma",
    ".ac3",
    ".ape",
    ".webm",
    ".mka",
    ".amr",
    ".3gp",
)


class AudioReadError(ValueError):
    """A file that cannot be read as audio; the message names the file and the cause."""

    def __init__(self, path: str | Path, cause: str):
        super().__init__(f"cannot read audio file {path}: {cause}")
        self.path, self.cause = str(path), cause


# libmpg123 prints harmless notes ("part2_3_length ...") straight to C-level stderr when decoding
# after a seek. While an MP3 window is decoded, fd 2 points at /dev/null; a counter under a lock
# makes that safe when threads read concurrently (the last one out restores stderr). Header reads
# are left alone so that progress bars of index builds stay visible.
_stderr_lock = threading.Lock()
_stderr_users = 0
_saved_stderr: int | None = None

# MP3 headers without a frame count (no Xing/Info frame) give a length estimated from the
# bitrate: real MTAT clips decode 0.5 % shorter than declared. A read that falls short of the
# declared span by more than this fraction of the declared length is a truncated file.
HEADER_SLACK = 0.02


@functools.cache
def _devnull() -> int:
    """/dev/null opened for writing, once per process (a training crop's MP3 decode is ~1 ms, and
    opening it for every window cost 1-2 % of that)."""
    return os.open(os.devnull, os.O_WRONLY)


@contextlib.contextmanager
def _quiet_decoder(f: sf.SoundFile):
    """Silence C-level stderr while an MP3 stream is decoded, whatever the file's name says
    (libsndfile sniffs the format from the content); a no-op for other formats."""
    global _stderr_users, _saved_stderr
    if f.format != "MP3":
        yield
        return
    with _stderr_lock:
        if _stderr_users == 0:
            _saved_stderr = os.dup(2)
            os.dup2(_devnull(), 2)
        _stderr_users += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_users -= 1
            if _stderr_users == 0:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None


def os_cause(err: OSError) -> str:
    """A short cause for an OS error: "permission denied", else the system's words."""
    if isinstance(err, PermissionError):
        return "permission denied"
    return (err.strerror or str(err)).lower()


def _failure(path: str | Path, err: Exception) -> AudioReadError:
    """Turn a soundfile/OS error into an AudioReadError with a cause a user can act on."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return AudioReadError(path, "file not found")
    except OSError as stat_err:
        return AudioReadError(path, os_cause(stat_err))
    if not os.access(path, os.R_OK):
        return AudioReadError(path, "permission denied")
    if size == 0:
        return AudioReadError(path, "empty file (0 bytes)")
    detail = getattr(err, "error_string", str(err))
    if "not a regular file" in detail:  # libsndfile's words when the decoder finds no stream
        detail = "unrecognised or corrupt data"
    return AudioReadError(path, f"not readable as audio, {size} bytes: {detail}")


def wav_data_bytes(path: str | Path) -> tuple[int, int] | None:
    """(bytes a RIFF WAV's data chunk declares, bytes the file holds from that chunk's start), None
    for another format or a length left open (0 or 0xFFFFFFFF: a stream written before its end was
    known). libsndfile counts only the frames a WAV holds, so a cut-off WAV would read as a short one."""
    with open(path, "rb") as raw:
        head = raw.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while len(chunk := raw.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                held = os.fstat(raw.fileno()).st_size - raw.tell()
                return None if size in (0, 0xFFFFFFFF) else (size, held)
            raw.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even length
    return None


def _check_declared(path: str | Path, info) -> None:
    """A WAV that holds less audio than its header declares is cut off: an error (`info`: an open
    SoundFile or sf.info's result)."""
    if not info.format.startswith("WAV"):
        return
    sizes = wav_data_bytes(path)
    if sizes and sizes[0] > sizes[1]:
        held = info.frames / info.samplerate
        raise AudioReadError(
            path,
            f"shorter than its header declares (truncated?): "
            f"{held * sizes[0] / sizes[1]:.2f} s declared, the file holds {held:.2f} s",
        )


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header only (MP3s without a Xing header: an estimate); a WAV
    cut short of what its header declares is an AudioReadError."""
    try:
        info = sf.info(str(path))
        _check_declared(path, info)
    except (sf.SoundFileError, OSError) as err:
        raise _failure(path, err) from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioReadError(path, "the header declares no audio frames")
    return info.frames / info.samplerate


def to_mono(y: np.ndarray) -> np.ndarray:
    """(T, C) float32 -> (T,): the one column of a mono file, else the channel average by a
    matrix product (10x faster than mean over axis 1)."""
    if y.shape[1] == 1:
        return y[:, 0]
    return y @ np.full(y.shape[1], 1.0 / y.shape[1], dtype=np.float32)


def _window(f: sf.SoundFile, path: str | Path, sample_rate: int, start: float, duration: float | None) -> np.ndarray:
    """One window from an open file: seek (only when not already there), read, mono, resample."""
    rate, channels = f.samplerate, f.channels
    first = int(round(start * rate))
    declared = max(0, f.frames - first)  # what the header promises from `first` on
    if duration is not None:
        declared = min(declared, int(round(duration * rate)))
    if declared == 0:  # the window starts after the end: the file is shorter than the window
        y = np.zeros((0, channels), dtype=np.float32)  # (0, C)
    else:
        with _quiet_decoder(f):
            if f.tell() != first:  # MP3 seeks walk from the file's start: skip them when contiguous
                f.seek(first)
            y = f.read(declared, dtype="float32", always_2d=True)  # (T, C)
    _check_complete(path, f, first, declared, len(y))
    mono = to_mono(y)  # (T,)
    if not np.isfinite(mono).all():
        raise AudioReadError(path, f"NaN or infinite samples in the window at {start:.2f} s")
    if rate != sample_rate and len(mono):
        mono = soxr.resample(mono, rate, sample_rate)  # (T * sample_rate / rate,)
    return mono.astype(np.float32, copy=False)


def _check_complete(path: str | Path, f: sf.SoundFile, first: int, declared: int, got: int) -> None:
    """A read that stops short of what the header declares (beyond an estimate's error, or with
    nothing at all) means the file is cut off: an error, never a silently short window."""
    missing = declared - got
    if missing > 0 and (got == 0 or missing > HEADER_SLACK * f.frames):
        raise AudioReadError(
            path,
            f"shorter than its header declares (truncated?): "
            f"{f.frames / f.samplerate:.2f} s declared, the audio stops "
            f"at {(first + got) / f.samplerate:.2f} s",
        )


def _check_span(start: float, duration: float | None) -> None:
    if start < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"read_window needs start >= 0 and duration > 0, got {start}, {duration}")


def read_window(path: str | Path, sample_rate: int, start: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Decode `[start, start + duration)` seconds of `path` at `sample_rate`, mono float32 (T,).

    Seeks instead of decoding what comes before `start`. A file shorter than the window gives
    what exists (possibly nothing); the caller decides whether to pad or loop. A file that holds
    less than its header declares (truncated) is an error.
    """
    _check_span(start, duration)
    try:
        with sf.SoundFile(str(path)) as f:
            _check_declared(path, f)
            return _window(f, path, sample_rate, start, duration)
    except (sf.SoundFileError, OSError) as err:
        raise _failure(path, err) from err


def read_windows(path: str | Path, sample_rate: int, starts: Iterable[float], duration: float) -> Iterator[np.ndarray]:
    """`read_window` for many windows of one file through one open handle (long files: windows
    in order are read without seeking, and the decoder is opened once)."""
    try:
        with sf.SoundFile(str(path)) as handle:
            _check_declared(path, handle)
            for start in starts:
                _check_span(start, duration)
                yield _window(handle, path, sample_rate, start, duration)  # (T,)
    except (sf.SoundFileError, OSError) as err:
        raise _failure(path, err) from err
