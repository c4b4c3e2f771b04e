"""The artist effect, measured (issue 28): on a generated dataset where each artist's tracks share a
timbre independent of the label (finetune/data/planted.py), the toolkit's label-stratified folds that
ignore artists overstate the accuracy of a classifier on new artists; its artist-aware folds do not.
The classifier is the bench's reference floor (MFCC means and standard deviations, logistic
regression), so the test measures the folds, not a training run."""

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from finetune.data import planted
from finetune.data.folds import cross_validation_split

FOLDS = 4


def mfcc_features(path: str) -> np.ndarray:
    y, rate = sf.read(path, dtype="float32")
    mfcc = librosa.feature.mfcc(y=y, sr=rate, n_mfcc=20)  # (20, frames)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def cross_validated_accuracy(dataset, features: dict, artists: dict) -> tuple[float, int]:
    """Mean test accuracy over the folds, and the test tracks whose artist (`artists`: id -> artist)
    also trained."""
    accuracies, shared = [], 0
    for fold in range(FOLDS):
        split = cross_validation_split(dataset, FOLDS, fold)
        x = {name: np.stack([features[a["path"]] for a in split[name]["audio"]]) for name in ("train", "test")}
        y = {name: np.asarray(split[name]["label"]) for name in ("train", "test")}
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x["train"], y["train"])
        accuracies.append(float(np.mean(model.predict(x["test"]) == y["test"])))
        trained = {artists[i] for i in split["train"]["id"]}
        shared += sum(artists[i] in trained for i in split["test"]["id"])
    return float(np.mean(accuracies)), shared


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory):
    return planted.generate(tmp_path_factory.mktemp("planted"))


@pytest.mark.slow
def test_folds_that_share_artists_overstate_accuracy_on_new_artists(planted_root):
    by_artist = planted.build(planted_root, group_by="artist")
    by_track = planted.build(planted_root, group_by="none")  # each track its own group: folds ignore artists
    tracks = sum(len(split) for split in by_artist.values())
    features = {a["path"]: mfcc_features(a["path"]) for name in by_artist for a in by_artist[name]["audio"]}
    artists = {row["id"]: row["group"] for name in by_artist for row in by_artist[name]}
    assert len(set(artists.values())) == len(planted.CLASSES) * planted.ARTISTS_PER_CLASS
    stratified, stratified_shared = cross_validated_accuracy(by_track, features, artists)
    aware, aware_shared = cross_validated_accuracy(by_artist, features, artists)
    assert aware_shared == 0, "artist-aware folds test no artist that trained"
    assert stratified_shared > 0.5 * tracks, "folds that ignore artists test mostly artists that trained"
    assert stratified >= aware + 0.15, (stratified, aware)
