"""Quality on real music: 4-fold cross-validation on the 40 real GTZAN clips in ../shared/realdata.

Four arms on the same folds (fold i tests, fold i+1 validates, the other two train; see
finetune/data/folds.py), each through the toolkit's public path except the reference:
(a) the reference floor: 20 MFCC means and standard deviations + scikit-learn's logistic regression
    (standardised, default C), fitted on the training split (and, for information, on training +
    validation: everything but the test fold);
(b) `musicnn_pretrained_gtzan backbone.mode=probe`: Won et al.'s MTAT MusiCNN frozen, its embeddings
    cached, a head fitted by L-BFGS with the penalty chosen on validation;
(c) `musicnn_pretrained_gtzan` as packaged: linear probe, then fine-tune;
(d) `cnn_gtzan`: the original project's CNN from scratch;
(e) `cnn_gtzan` once per front end (`compare --vary model.args.frontend=...`, finetune/vary.py), each at
    the same fixed budget of FRONT_END_STEPS optimizer steps a fold (the packaged budget, six times
    over, would take about four hours on 2 cores), with paired tests against log-mel on the pooled
    test tracks.
Targets: (c) >= (b) >= (a) on the mean test accuracy; (b) under a minute on 2 cores (4 folds, cold
embedding cache). Recipes are run with their packaged settings; only the data (root, folds) and the
weights' location are set. `--quick` trains 2 steps per fold (a smoke test, not figures).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.timing import Result, figure, timed
from finetune import recipe as recipes
from finetune.cv import cross_validate
from finetune.data.recipe_data import recipe_dataset
from finetune.features import FRONTENDS
from finetune.vary import vary

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
GTZAN = REALDATA / "gtzan"
MUSICNN = REALDATA / "pretrained" / "sota-music-tagging-models" / "mtat" / "musicnn" / "best_model.pth"
FOLDS = 4
PROBE_SECONDS = 60.0  # target: the 4-fold probe, embeddings included
DATA = [f"data.root={GTZAN}", "data.split_scheme=random"]  # every clip present; the folds pool the splits
FRONT_END_STEPS = 120  # (e): every front end's budget, steps a fold
QUICK = ["train.max_steps=2", "data.num_workers=0", "eval.durations=null"]


def mfcc_features(path: str) -> np.ndarray:
    """20 MFCC means and standard deviations of a whole track (librosa defaults): (40,)."""
    y, rate = sf.read(path, dtype="float32")
    mfcc = librosa.feature.mfcc(y=y, sr=rate, n_mfcc=20)  # (20, frames)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def reference_accuracies(fold_recipes: list) -> dict[str, list[float]]:
    """Test accuracy of the MFCC + logistic-regression reference on each fold, fitted on the
    training split ("train") and on training + validation ("train+validation")."""
    features: dict[str, np.ndarray] = {}
    scores: dict[str, list[float]] = {"train": [], "train+validation": []}
    for recipe in fold_recipes:
        data = recipe_dataset(recipe)
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


def toolkit_accuracies(recipe: str, overrides: list[str], out: Path) -> list[float]:
    """Test accuracy of each fold of a toolkit recipe, through `finetune cv`."""
    folder, _ = cross_validate(recipe, [*DATA, *overrides], FOLDS, [0], out)
    summary = json.loads((folder / "summary.json").read_text())
    return [run["test"]["accuracy"] for run in summary["runs"]]


def frontend_comparison(out: Path, quick: bool) -> tuple[dict, float]:
    """(e): `cnn_gtzan` once per front end on the same folds (`quick`: the first two, 2 steps); vary.json's
    content and the wall time."""
    spec = f"model.args.frontend={','.join(list(FRONTENDS)[:2] if quick else FRONTENDS)}"
    budget = QUICK if quick else [f"train.max_steps={FRONT_END_STEPS}"]
    (folder, _), seconds = timed(lambda: vary("cnn_gtzan", [*DATA, *budget], spec, FOLDS, [0], out))
    return json.loads((folder / "vary.json").read_text()), seconds


def frontend_lines(summary: dict, seconds: float) -> list[str]:
    """One line per front end: per-fold accuracies, pooled accuracy with its interval, the paired
    test against the first (log-mel)."""
    lines = [f"(e) cnn_gtzan per front end (paired against "
             f"{summary['values'][0]['value']} on the pooled test tracks), {figure(seconds)} s in all:"]
    for value in summary["values"]:
        folds = ", ".join(f"{run['score']:.2f}" for run in value["runs"])
        pooled = value["pooled"]
        paired = value["paired_against_first"]
        versus = "" if paired is None else (
            f"; vs first {paired[0]['difference']:+.3f} [{paired[0]['interval'][0]:+.3f}, "
            f"{paired[0]['interval'][1]:+.3f}], McNemar p {paired[0]['mcnemar_p']:.2g}")
        lines.append(f"  {value['value']}: {spread([run['score'] for run in value['runs']])} ({folds}), pooled "
                     f"{pooled['value']:.3f} [{pooled['interval'][0]:.3f}, {pooled['interval'][1]:.3f}]{versus}")
    return lines


def frontend_results(summary: dict) -> list[Result]:
    """(e) as information: each front end's pooled test accuracy against the first's."""
    first = summary["values"][0]
    return [Result("quality", f"(e) {value['value']} vs {first['value']} front end, pooled test accuracy",
                   value["pooled"]["value"], first["pooled"]["value"], "acc", None, higher_is_better=True)
            for value in summary["values"][1:]]


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def run(quick: bool) -> list[Result]:
    if not (GTZAN / "genres").is_dir() or not MUSICNN.is_file():
        print(f"[quality] skipped: the real GTZAN clips or MusiCNN weights are absent under {REALDATA}")
        return []
    extra = QUICK if quick else []
    pretrained = [f"backbone.path={MUSICNN}", *extra]
    folds = [recipes.load("cnn_gtzan", [*DATA, f"data.folds={FOLDS}", f"data.fold={i}"]) for i in range(FOLDS)]
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        out = Path(tmp)
        reference, reference_seconds = timed(lambda: reference_accuracies(folds))
        arms = {
            "(a) MFCC-20 mean+std + logistic regression (fit on train)": (reference["train"], reference_seconds),
            "(a') same, fit on train + validation (info)": (reference["train+validation"], reference_seconds),
            "(b) probe of Won et al.'s MTAT MusiCNN": timed(lambda: toolkit_accuracies(
                "musicnn_pretrained_gtzan", [*pretrained, "backbone.mode=probe"], out / "probe")),
            "(c) fine-tune of it (musicnn_pretrained_gtzan as packaged)": timed(lambda: toolkit_accuracies(
                "musicnn_pretrained_gtzan", pretrained, out / "finetune")),
            "(d) simple_cnn from scratch (cnn_gtzan)": timed(lambda: toolkit_accuracies(
                "cnn_gtzan", extra, out / "scratch")),
        }
        frontends, frontend_seconds = frontend_comparison(out / "frontends", quick)
    print(f"[quality] {FOLDS}-fold CV on the real GTZAN clips of {GTZAN}: "
          "mean ± std (ddof=1) test accuracy over folds, wall time of all folds:")
    for name, (accuracies, seconds) in arms.items():
        print(f"[quality]   {name}: {spread(accuracies)} ({', '.join(f'{a:.2f}' for a in accuracies)}), "
              f"{figure(seconds)} s")
    for line in frontend_lines(frontends, frontend_seconds):
        print(f"[quality] {line}")
    mean = {name[:3].strip(): float(np.mean(acc)) for name, (acc, _) in arms.items()}
    probe_seconds = arms["(b) probe of Won et al.'s MTAT MusiCNN"][1]
    return [
        Result("quality", "(b) probe vs (a) MFCC reference, mean test accuracy", mean["(b)"], mean["(a)"],
               "acc", 1.0, higher_is_better=True),
        Result("quality", "(c) fine-tune vs (b) probe, mean test accuracy", mean["(c)"], mean["(b)"],
               "acc", 1.0, higher_is_better=True),
        Result("quality", "(d) scratch CNN vs (a) MFCC reference, mean test accuracy", mean["(d)"], mean["(a)"],
               "acc", None, higher_is_better=True),
        Result("quality", f"(b) probe wall time, {FOLDS} folds, cold cache, vs {PROBE_SECONDS:g} s",
               probe_seconds, PROBE_SECONDS, "s", 1.0, higher_is_better=False),
        *frontend_results(frontends),
    ]
