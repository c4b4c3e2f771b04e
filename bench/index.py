"""Index building: `fma.build(subset="large")` on a generated FMA-large-sized release vs a bare
pandas read of the same tracks.csv; seconds and peak memory.

tracks.csv has FMA's 52 columns and its 3-row header (column groups, fields, index name), written
by the tests' fixture, with long fields of realistic shape (multi-line quoted bios); every track
has a genre_top (the worst case: all of them are indexed). Every track's audio file exists, as
hard links to one 30 s MP3 in `fma_large/NNN/NNNNNN.mp3`, so the build is the full one (metadata
parse, split and label mapping, a header read of every file, Arrow tables), no `allow_missing`.
The header reads hit the page cache (one inode): cold-disk latency is not measured. Each
measurement runs in a fresh process so its peak RSS (Linux VmHWM) is its own; the warm build and
the bare parse alternate for a few rounds (medians). No target (issue 8 asks for seconds and peak
memory): the ratio is informational, since the build stats every file (106,574 stats, about 0.5 s
alone) and builds Arrow tables, which the bare parse does not.
"""

from __future__ import annotations

import importlib.util
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.media import FMA_MP3, copies, write_tone
from bench.timing import Result, alternate, median, process_context, timed

TRACKS = {False: 106_574, True: 200}  # FMA-large's track count
ROUNDS = {False: 3, True: 1}
TOP_GENRES = [
    "Blues",
    "Classical",
    "Country",
    "Easy Listening",
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Jazz",
    "Old-Time / Historic",
    "Pop",
    "Rock",
    "Soul-RnB",
    "Spoken",
]
FILLER = {
    ("artist", "bio"): (
        '<p>A "collective" from the coast, writing, recording\nand touring since '
        "2004." + " Their records mix field recordings, tape loops and drums." * 5 + "</p>\n"
    ),
    ("album", "information"): "<p>Recorded live to two-track, mixed at home, mastered in a day.</p>",
    ("album", "date_created"): "2008-11-26 01:44:45",
    ("track", "date_created"): "2008-11-26 01:48:12",
    ("album", "tags"): "['field recording', 'tape']",
    ("track", "tags"): "['ambient', 'loops']",
    ("artist", "website"): "http://example.org/band",
    ("track", "license"): "Attribution-NonCommercial",
}


def track_ids(count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted ids from FMA's range (2 .. 155,320), with its gaps."""
    return np.sort(rng.choice(np.arange(2, 155_321), size=count, replace=False))


def fixtures():
    """tests/data_fixtures.py, the project's one writer of FMA's tracks.csv format (by path: no
    `tests` package of another project can stand in)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "data_fixtures.py"
    spec = importlib.util.spec_from_file_location("data_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def track_rows(ids: np.ndarray, rng: np.random.Generator) -> dict[int, dict]:
    """tracks.csv values per track: 8,000 small, 17,000 more medium, the rest large; splits
    80/10/10; long text fields of realistic size; genre i of TOP_GENRES has genre id i + 1."""
    subset = np.array(["large"] * len(ids), dtype=object)
    order = rng.permutation(len(ids))
    subset[order[:8_000]], subset[order[8_000:25_000]] = "small", "medium"
    split = rng.choice(["training", "validation", "test"], size=len(ids), p=[0.8, 0.1, 0.1])
    genre = rng.integers(0, len(TOP_GENRES), size=len(ids))
    return {
        int(track): {
            **FILLER,
            ("set", "subset"): subset[i],
            ("set", "split"): split[i],
            ("track", "title"): f"Track {track}",
            ("track", "genre_top"): TOP_GENRES[g],
            ("track", "genres"): f"[{g + 1}]",
            ("track", "genres_all"): f"[{g + 1}]",
        }
        for i, (track, g) in enumerate(zip(ids, genre))
    }


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, which a new process starts afresh
    (`ru_maxrss` is carried over from the parent across fork and exec on Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def measure(kind: str, root: str) -> tuple[float, int]:
    """Run in a fresh process: seconds and peak-RSS growth of the bare parse or the toolkit build."""
    if kind == "bare":
        import pandas as pd

        def build():
            return pd.read_csv(Path(root) / "fma_metadata" / "tracks.csv", header=[0, 1], index_col=0, low_memory=False)
    else:
        from finetune.data import fma

        def build():
            return fma.build(root, subset="large")

    before = peak_rss()  # after the imports
    _, elapsed = timed(build)
    return elapsed, peak_rss() - before


def in_fresh_process(kind: str, root: Path, quick: bool) -> tuple[float, int]:
    """`measure` in a process of its own (`quick`: forked, its peak memory not its own)."""
    with ProcessPoolExecutor(1, mp_context=process_context(quick)) as pool:
        return pool.submit(measure, kind, str(root)).result()


def fresh_arm(kind: str, root: Path, quick: bool):
    """An arm for `alternate`: one measurement in a fresh process per round."""
    return lambda: [in_fresh_process(kind, root, quick)]


def run(quick: bool) -> list[Result]:
    count = TRACKS[quick]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = track_ids(count, rng)
        metadata = fixtures()
        metadata.write_tracks(root / "fma_metadata" / "tracks.csv", track_rows(ids, rng))
        metadata.write_genres(
            root / "fma_metadata" / "genres.csv", [(i + 1, 0, title) for i, title in enumerate(TOP_GENRES)]
        )
        template = write_tone(root / "template.mp3", 30.0, FMA_MP3)
        copies(template, (root / "fma_large" / f"{t:06d}"[:3] / f"{t:06d}.mp3" for t in ids))
        megabytes = (root / "fma_metadata" / "tracks.csv").stat().st_size / 2**20
        first, first_peak = in_fresh_process("toolkit", root, quick)  # empty header cache
        runs = alternate({kind: fresh_arm(kind, root, quick) for kind in ("toolkit", "bare")}, ROUNDS[quick])
    elapsed = {kind: median([s for s, _ in measured]) for kind, measured in runs.items()}
    peak = {kind: max(p for _, p in measured) / 2**20 for kind, measured in runs.items()}
    return [
        Result(
            "index",
            f"FMA large, {count:,} tracks, tracks.csv {megabytes:.0f} MiB, header cache warm",
            elapsed["toolkit"],
            elapsed["bare"],
            "s",
            None,
            higher_is_better=False,
            note=f"first build (reads every file's header) {first:.1f} s; peak RSS growth: "
            f"toolkit {peak['toolkit']:,.0f} MiB (first build {first_peak / 2**20:,.0f}), "
            f"bare {peak['bare']:,.0f} MiB",
        )
    ]
