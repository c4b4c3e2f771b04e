"""Quality on real music: 4-fold cross-validation on the 40 real GTZAN clips in ../shared/realdata.

Two kinds of folds (fold i tests, fold i+1 validates, the other two train; see finetune/data/folds.py):
label-stratified folds that ignore artists (`data.group_by=none`, the folds of every run before issue
28) and artist-aware folds (`data.group_by=artist data.unsplittable=leave_out`, the honest default:
no artist on both sides; blues, classical, reggae and rock are one artist each and jazz too few for 4
folds, so their tracks are left out of the test folds and 20 of the 40 clips are tested). Arms, each
through the toolkit's public path except the reference:
(a) the reference floor: 20 MFCC means and standard deviations + scikit-learn's logistic regression
    (standardised, default C), fitted on the training split (and, for information, on training +
    validation: everything but the test fold); artist-aware folds;
(b) `musicnn_pretrained_gtzan backbone.mode=probe`: Won et al.'s MTAT MusiCNN frozen, its embeddings
    cached, a head fitted by L-BFGS with the penalty chosen on validation; both fold kinds;
(c) `musicnn_pretrained_gtzan` as packaged: linear probe, then fine-tune; artist-aware folds;
(d) `cnn_gtzan`: the original project's CNN from scratch, at a fixed budget of SCRATCH_STEPS optimizer
    steps a fold (the packaged budget takes 40 minutes a fold kind on 2 cores); both fold kinds;
(e) `cnn_gtzan` once per front end (`compare --vary model.args.frontend=...`, finetune/vary.py), each at
    the same fixed budget of FRONT_END_STEPS optimizer steps a fold, with paired tests against log-mel
    on the pooled test tracks; artist-aware folds.
For (b) and (d) the fold kinds are compared on the tracks both test (`fold_kinds`): each kind's
accuracy there, the paired difference (finetune.stats.paired) and each kind's leak (test tracks
whose artist trains in their fold: summary.json's count, and the same count by GTZAN's artist index,
which the label-stratified runs cannot record since their groups are the tracks themselves).
Targets: (c) >= (b) >= (a) on the mean test accuracy of the artist-aware folds; (b) under a minute
on 2 cores (4 folds, cold embedding cache). Recipes are run with their packaged settings; only the
data (root, folds, groups), the weights' location and (d)'s and (e)'s budgets are set. `--quick` (a
smoke test, not figures): 3 folds ((e): each front end once, on an artist-disjoint split), 2 steps of
two 1 s crops a run, one 1 s window a clip scored.
`python -m bench quality-folds [--quick]` runs the fold-kind comparison alone (the whole case takes
hours on 2 cores).
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.timing import Result, figure, timed
from finetune import recipe as recipes
from finetune.cv import cross_validate, pooled_leakage
from finetune.data.gtzan import track_groups
from finetune.data.recipe_data import recipe_dataset
from finetune.evaluation import TrackPredictions
from finetune.features import FRONTENDS
from finetune.leakage import leakage_text
from finetune.stats.bootstrap import headline_interval
from finetune.stats.paired import paired_test
from finetune.vary import vary

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
GTZAN = REALDATA / "gtzan"
MUSICNN = REALDATA / "pretrained" / "sota-music-tagging-models" / "mtat" / "musicnn" / "best_model.pth"
FOLDS = {False: 4, True: 3}  # --quick: the fewest cross-validation takes
FRONT_END_FOLDS = {False: 4, True: None}  # (e) --quick: each front end once, on an artist-disjoint split
PROBE_SECONDS = 60.0  # target: the 4-fold probe, embeddings included
DATA = [f"data.root={GTZAN}", "data.split_scheme=random"]  # every clip present; the folds pool the splits
STRATIFIED = "label-stratified"
ARTIST_AWARE = "artist-aware"
FOLD_KINDS = {
    ARTIST_AWARE: ["data.group_by=artist", "data.unsplittable=leave_out"],  # first: a cold cache
    STRATIFIED: ["data.group_by=none"],
}
SCRATCH_STEPS = 60  # (d): its budget, steps a fold
FRONT_END_STEPS = 120  # (e): every front end's budget, steps a fold
# --quick: 2 steps of two 1 s crops; one 1 s window a clip scored
QUICK = [
    "train.max_steps=2",
    "train.batch_size=2",
    "data.clip_seconds=1",
    "data.num_workers=0",
    "eval.durations=null",
    "eval.max_seconds=1",
]
PROBE = "(b) probe of Won et al.'s MTAT MusiCNN"
SCRATCH = "(d) simple_cnn from scratch (cnn_gtzan)"


def mfcc_features(path: str) -> np.ndarray:
    """20 MFCC means and standard deviations of a whole track (librosa defaults): (40,)."""
    y, rate = sf.read(path, dtype="float32")
    mfcc = librosa.feature.mfcc(y=y, sr=rate, n_mfcc=20)  # (20, frames)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def fold_datasets(kind: str, folds: int) -> list:
    """The `folds` cross-validation splits of the clips under a fold kind, as any recipe sees them."""
    return [
        recipe_dataset(recipes.load("cnn_gtzan", [*DATA, *FOLD_KINDS[kind], f"data.folds={folds}", f"data.fold={i}"]))
        for i in range(folds)
    ]


def reference_accuracies(folds: list) -> dict[str, list[float]]:
    """Test accuracy of the MFCC + logistic-regression reference on each fold's splits, fitted on the
    training split ("train") and on training + validation ("train+validation")."""
    features: dict[str, np.ndarray] = {}
    scores: dict[str, list[float]] = {"train": [], "train+validation": []}
    for data in folds:
        x, y = {}, {}
        for split in ("train", "validation", "test"):
            paths = [audio["path"] for audio in data[split]["audio"]]
            for path in paths:
                if path not in features:
                    features[path] = mfcc_features(path)
            x[split], y[split] = np.stack([features[p] for p in paths]), np.asarray(data[split]["label"])
        for name, splits in (("train", ["train"]), ("train+validation", ["train", "validation"])):
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
            model.fit(np.concatenate([x[s] for s in splits]), np.concatenate([y[s] for s in splits]))
            scores[name].append(float(np.mean(model.predict(x["test"]) == y["test"])))
    return scores


def artist_leak(folds: list) -> set[str]:
    """Test tracks (ids) whose artist, by GTZAN's artist index, also has a training track in their fold."""
    shared = set()
    for data in folds:
        train, test = list(data["train"]["id"]), list(data["test"]["id"])
        artist = track_groups([*train, *test], "artist")
        seen = {artist[track] for track in train}
        shared |= {track for track in test if artist[track] in seen}
    return shared


def toolkit_cv(recipe: str, overrides: list[str], folds: int, out: Path) -> dict:
    """summary.json of `finetune cv` of a toolkit recipe (seed 0) on the clips."""
    folder, _ = cross_validate(recipe, [*DATA, *overrides], folds, [0], out)
    return json.loads((folder / "summary.json").read_text())


def fold_accuracies(summary: dict) -> list[float]:
    return [run["test"]["accuracy"] for run in summary["runs"]]


def both_kinds(recipe: str, overrides: list[str], folds: int, out: Path) -> dict[str, tuple[dict, Path, float]]:
    """The recipe's cross-validation on each fold kind: {kind: (summary.json, cv folder, seconds)}."""
    runs = {}
    for kind, settings in FOLD_KINDS.items():
        folder = out / kind
        summary, seconds = timed(partial(toolkit_cv, recipe, [*settings, *overrides], folds, folder))
        runs[kind] = (summary, folder, seconds)
    return runs


def on_tracks(tracks: TrackPredictions, ids: list[str]) -> TrackPredictions:
    """`tracks` restricted to `ids`, in their order (paired_test refuses two different sets of tracks)."""
    row = {track: i for i, track in enumerate(tracks.ids)}
    order = np.array([row[track] for track in ids])  # (len(ids),)
    return TrackPredictions(
        list(ids), [tracks.paths[i] for i in order], tracks.probs[order], tracks.labels[order], tracks.label_names
    )


def right(tracks: TrackPredictions, ids: set[str]) -> int:
    """How many of the tracks in `ids` the predictions get right."""
    correct = tracks.probs.argmax(axis=1) == tracks.labels  # (N,)
    return int(sum(ok for track, ok in zip(tracks.ids, correct) if track in ids))


def kind_comparison(runs: dict[str, tuple[dict, Path, float]], leaks: dict[str, set[str]]) -> dict:
    """One arm's two fold kinds (`both_kinds`) on the tracks both test: per kind its fold and pooled
    scores, its score there with its interval, its leaks and seconds; the paired difference
    label-stratified - artist-aware there."""
    tracks = {
        kind: TrackPredictions.load(folder / "predictions" / "test-seed0.npz") for kind, (_, folder, _) in runs.items()
    }
    tested = set(tracks[ARTIST_AWARE].ids)
    common = [track for track in tracks[STRATIFIED].ids if track in tested]
    paired = {kind: on_tracks(found, common) for kind, found in tracks.items()}
    kinds = {
        kind: {
            "folds": fold_accuracies(summary),
            "pooled": summary["pooled"][0],
            "on_common": headline_interval(paired[kind]),
            "leak": pooled_leakage(summary["runs"]),
            "artist_leak": len(leaks[kind]),
            "artist_leak_on_common": len(leaks[kind] & set(common)),
            "leaky_right": right(tracks[kind], leaks[kind]),
            "others_right": right(tracks[kind], set(tracks[kind].ids) - leaks[kind]),
            "seconds": seconds,
        }
        for kind, (summary, _, seconds) in runs.items()
    }
    return {"tracks": len(common), "kinds": kinds, "paired": paired_test(paired[STRATIFIED], paired[ARTIST_AWARE])}


def kind_lines(name: str, comparison: dict) -> list[str]:
    """One arm's comparison: a line per fold kind, then the paired difference."""
    lines, count = [f"{name}:"], comparison["tracks"]
    for kind, found in comparison["kinds"].items():
        pooled, (score, interval) = found["pooled"], found["on_common"]
        lines.append(
            f"  {kind} folds: {spread(found['folds'])} ({', '.join(f'{a:.2f}' for a in found['folds'])}), "
            f"pooled {pooled['value']:.3f} [{pooled['interval'][0]:.3f}, {pooled['interval'][1]:.3f}] on "
            f"{pooled['tracks']} tracks, {score:.3f} [{interval[0]:.3f}, {interval[1]:.3f}] on the {count} both "
            f"test, {figure(found['seconds'])} s; leak: summary.json says "
            f'"{leakage_text(found["leak"]) or "none recorded"}"; by GTZAN\'s artist index {found["artist_leak"]} '
            f"of {pooled['tracks']} test tracks share an artist with training ({found['artist_leak_on_common']} "
            f"of the {count}), {found['leaky_right']} of them right, {found['others_right']} of the other "
            f"{pooled['tracks'] - found['artist_leak']}"
        )
    paired = comparison["paired"]
    lines.append(
        f"  {STRATIFIED} - {ARTIST_AWARE} on the {paired['tracks']} tracks both test: "
        f"{paired['difference']:+.3f} [{paired['interval'][0]:+.3f}, {paired['interval'][1]:+.3f}], "
        f"bootstrap p {paired['bootstrap_p']:.2g}, McNemar p {paired['mcnemar_p']:.2g} "
        f"({paired['b']} right only on {STRATIFIED} folds, {paired['c']} only on {ARTIST_AWARE})"
    )
    return lines


def kind_result(name: str, comparison: dict) -> Result:
    """(information) An arm's accuracy on the tracks both kinds test, label-stratified against artist-aware."""
    score = {kind: found["on_common"][0] for kind, found in comparison["kinds"].items()}
    return Result(
        "quality",
        f"{name[:3]} {STRATIFIED} vs {ARTIST_AWARE} folds, accuracy on the {comparison['tracks']} tracks both test",
        score[STRATIFIED],
        score[ARTIST_AWARE],
        "acc",
        None,
        higher_is_better=True,
    )


def compare_kinds(out: Path, quick: bool) -> dict[str, dict]:
    """(b) and (d) on both fold kinds: {arm: its `kind_comparison`}."""
    arms = {
        PROBE: (
            "musicnn_pretrained_gtzan",
            [f"backbone.path={MUSICNN}", "backbone.mode=probe", *(QUICK if quick else [])],
        ),
        SCRATCH: ("cnn_gtzan", QUICK if quick else [f"train.max_steps={SCRATCH_STEPS}"]),
    }
    leaks = {kind: artist_leak(fold_datasets(kind, FOLDS[quick])) for kind in FOLD_KINDS}
    return {
        name: kind_comparison(both_kinds(recipe, overrides, FOLDS[quick], out / name[1]), leaks)
        for name, (recipe, overrides) in arms.items()
    }


def frontend_comparison(out: Path, quick: bool) -> tuple[dict, float]:
    """(e): `cnn_gtzan` once per front end on the artist-aware folds (`quick`: the first two, 2 steps);
    vary.json's content and the wall time."""
    spec = f"model.args.frontend={','.join(list(FRONTENDS)[:2] if quick else FRONTENDS)}"
    budget = QUICK if quick else [f"train.max_steps={FRONT_END_STEPS}"]
    overrides = [*DATA, *FOLD_KINDS[ARTIST_AWARE], *budget]
    (folder, _), seconds = timed(lambda: vary("cnn_gtzan", overrides, spec, FRONT_END_FOLDS[quick], [0], out))
    return json.loads((folder / "vary.json").read_text()), seconds


def frontend_lines(summary: dict, seconds: float) -> list[str]:
    """One line per front end: per-fold accuracies, pooled accuracy with its interval, the paired
    test against the first (log-mel)."""
    lines = [
        f"(e) cnn_gtzan per front end (paired against "
        f"{summary['values'][0]['value']} on the pooled test tracks), {figure(seconds)} s in all:"
    ]
    for value in summary["values"]:
        folds = ", ".join(f"{run['score']:.2f}" for run in value["runs"])
        pooled = value["pooled"]
        paired = value["paired_against_first"]
        versus = (
            ""
            if paired is None
            else (
                f"; vs first {paired[0]['difference']:+.3f} [{paired[0]['interval'][0]:+.3f}, "
                f"{paired[0]['interval'][1]:+.3f}], McNemar p {paired[0]['mcnemar_p']:.2g}"
            )
        )
        lines.append(
            f"  {value['value']}: {spread([run['score'] for run in value['runs']])} ({folds}), pooled "
            f"{pooled['value']:.3f} [{pooled['interval'][0]:.3f}, {pooled['interval'][1]:.3f}]{versus}"
        )
    return lines


def frontend_results(summary: dict) -> list[Result]:
    """(e) as information: each front end's pooled test accuracy against the first's."""
    first = summary["values"][0]
    return [
        Result(
            "quality",
            f"(e) {value['value']} vs {first['value']} front end, pooled test accuracy",
            value["pooled"]["value"],
            first["pooled"]["value"],
            "acc",
            None,
            higher_is_better=True,
        )
        for value in summary["values"][1:]
    ]


def spread(values: list[float]) -> str:
    """Mean ± standard deviation (ddof=1) of a few runs' scores; the score alone for one run."""
    if len(values) < 2:
        return f"{np.mean(values):.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def absent() -> bool:
    """True (and says so) when the real clips or the MusiCNN weights are not there."""
    if (GTZAN / "genres").is_dir() and MUSICNN.is_file():
        return False
    print(f"[quality] skipped: the real GTZAN clips or MusiCNN weights are absent under {REALDATA}")
    return True


def print_kinds(comparisons: dict[str, dict], folds: int) -> None:
    print(
        f"[quality] {folds}-fold CV on the real GTZAN clips of {GTZAN}, {' and '.join(FOLD_KINDS)} folds: "
        "mean ± std (ddof=1) test accuracy over folds, pooled test accuracy [95% interval]:"
    )
    for name, comparison in comparisons.items():
        for line in kind_lines(name, comparison):
            print(f"[quality] {line}")


def fold_kinds(quick: bool) -> list[Result]:
    """The fold-kind comparison alone: (b) and (d) on both kinds of folds."""
    if absent():
        return []
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        comparisons = compare_kinds(Path(tmp), quick)
    print_kinds(comparisons, FOLDS[quick])
    return [kind_result(name, comparison) for name, comparison in comparisons.items()]


def run(quick: bool) -> list[Result]:
    if absent():
        return []
    pretrained = [f"backbone.path={MUSICNN}", *FOLD_KINDS[ARTIST_AWARE], *(QUICK if quick else [])]
    folds = FOLDS[quick]
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        out = Path(tmp)
        comparisons = compare_kinds(out, quick)
        reference, reference_seconds = timed(lambda: reference_accuracies(fold_datasets(ARTIST_AWARE, folds)))
        finetune, finetune_seconds = timed(lambda: toolkit_cv("musicnn_pretrained_gtzan", pretrained, folds, out / "c"))
        frontends, frontend_seconds = frontend_comparison(out / "frontends", quick)
    print_kinds(comparisons, folds)
    aware = {name: comparison["kinds"][ARTIST_AWARE] for name, comparison in comparisons.items()}
    arms = {
        "(a) MFCC-20 mean+std + logistic regression (fit on train)": (reference["train"], reference_seconds),
        "(a') same, fit on train + validation (info)": (reference["train+validation"], reference_seconds),
        PROBE: (aware[PROBE]["folds"], aware[PROBE]["seconds"]),
        "(c) fine-tune of it (musicnn_pretrained_gtzan as packaged)": (fold_accuracies(finetune), finetune_seconds),
        SCRATCH: (aware[SCRATCH]["folds"], aware[SCRATCH]["seconds"]),
    }
    print(
        f"[quality] {folds}-fold CV, {ARTIST_AWARE} folds: mean ± std (ddof=1) test accuracy over folds, "
        "wall time of all folds:"
    )
    for name, (accuracies, seconds) in arms.items():
        print(
            f"[quality]   {name}: {spread(accuracies)} ({', '.join(f'{a:.2f}' for a in accuracies)}), "
            f"{figure(seconds)} s"
        )
    for line in frontend_lines(frontends, frontend_seconds):
        print(f"[quality] {line}")
    mean = {name[:3].strip(): float(np.mean(acc)) for name, (acc, _) in arms.items()}
    return [
        Result(
            "quality",
            "(b) probe vs (a) MFCC reference, mean test accuracy",
            mean["(b)"],
            mean["(a)"],
            "acc",
            1.0,
            higher_is_better=True,
        ),
        Result(
            "quality",
            "(c) fine-tune vs (b) probe, mean test accuracy",
            mean["(c)"],
            mean["(b)"],
            "acc",
            1.0,
            higher_is_better=True,
        ),
        Result(
            "quality",
            "(d) scratch CNN vs (a) MFCC reference, mean test accuracy",
            mean["(d)"],
            mean["(a)"],
            "acc",
            None,
            higher_is_better=True,
        ),
        Result(
            "quality",
            f"(b) probe wall time, {folds} folds, cold cache, vs {PROBE_SECONDS:g} s",
            aware[PROBE]["seconds"],
            PROBE_SECONDS,
            "s",
            1.0,
            higher_is_better=False,
        ),
        *[kind_result(name, comparison) for name, comparison in comparisons.items()],
        *frontend_results(frontends),
    ]
