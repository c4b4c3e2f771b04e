"""The probe for every model: a head fitted to convergence on cached embeddings, and the linear
probe that fine-tuning starts from (LP-FT), on tiny data and on the real GTZAN clips."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from torch import nn

from backbone_fixtures import tiny_backbones  # noqa: F401  fixture
from baselines.loading import import_won_checkpoint
from baselines.musicnn import MusicnnModel
from finetune.backbones.wav2vec2 import speech_head
from finetune.cli import main
from finetune.evaluation import TrackPredictions
from finetune.predict import Predictor
from finetune.probe import (
    Embedded,
    Embedder,
    expanded_head,
    fit_head,
    fold_standardisation,
    lbfgs_fit,
    path_slug,
    penalised_loss,
    reduced_head,
    standardiser,
)

MUSICNN = "pretrained/sota-music-tagging-models/mtat/musicnn/best_model.pth"


def linear_embedder() -> Embedder:
    return Embedder(
        layer_features=None,
        head=lambda modules, x: modules.classifier(x),
        head_input="classifier",
        num_layers=0,
        cut=lambda model, layer: model,
    )


def chain_embedder() -> Embedder:
    """The wav2vec2 / HuBERT / MERT head: projector then classifier, declared a linear chain."""
    return Embedder(
        layer_features=None,
        head=speech_head,
        head_input="projector",
        num_layers=0,
        cut=lambda model, layer: model,
        linear_chain=("projector", "classifier"),
    )


def speech_head_modules(dims: int, hidden: int, classes: int) -> nn.ModuleDict:
    return nn.ModuleDict({"projector": nn.Linear(dims, hidden), "classifier": nn.Linear(hidden, classes)})


def blobs(rng, count: int, classes: int = 3, dims: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes on features of very different scales: (N, D), (N,)."""
    labels = rng.integers(0, classes, count)
    centres = rng.normal(0, 1.0, (classes, dims))
    x = centres[labels] + rng.normal(0, 1.5, (count, dims))
    return (x * np.logspace(-2, 2, dims)).astype(np.float32), labels  # scales 0.01 .. 100


def embedded(labels: np.ndarray) -> Embedded:
    """Split metadata for `fit_head`: one window per track."""
    return Embedded(
        files=[],
        track_index=np.arange(len(labels)),
        targets=labels.astype(np.int64),
        paths=[f"t{i}" for i in range(len(labels))],
    )


def task(metric="loss"):
    return {
        "label_names": ["a", "b", "c"],
        "multi_label": False,
        "aggregate": "mean",
        "metric": metric,
        "greater_is_better": metric != "loss",
    }


def test_the_fitted_head_is_scikit_learns_logistic_regression():
    """L-BFGS to convergence on the mean cross-entropy + wd/2 |W|^2 is multinomial logistic
    regression with C = 1 / (wd N) on standardised features, whatever the features' scales."""
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 300)
    vx, vy = blobs(np.random.default_rng(1), 90)
    decay = 0.01
    initial = nn.ModuleDict({"classifier": nn.Linear(6, 3)})
    fit = fit_head(
        initial,
        linear_embedder(),
        torch.from_numpy(x),
        embedded(y),
        torch.from_numpy(vx),
        embedded(vy),
        task(),
        [decay],
        max_iter=500,
    )
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    reference = LogisticRegression(C=1 / (decay * len(x)), max_iter=10_000, tol=1e-10).fit((x - mean) / std, y)
    with torch.no_grad():
        ours = fit.head["classifier"](torch.from_numpy(vx)).softmax(dim=1).numpy()  # raw inputs: scaling folded in
    np.testing.assert_allclose(ours, reference.predict_proba((vx - mean) / std), atol=2e-3)


def test_the_penalty_is_chosen_on_validation():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 40)  # few tracks, many penalties: the weakest one overfits
    vx, vy = blobs(np.random.default_rng(3), 300)
    fits = {}
    for decays in ([1e-4], [1.0], [1e-4, 1e-2, 1.0]):
        fits[tuple(decays)] = fit_head(
            nn.ModuleDict({"classifier": nn.Linear(6, 3)}),
            linear_embedder(),
            torch.from_numpy(x),
            embedded(y),
            torch.from_numpy(vx),
            embedded(vy),
            task(),
            decays,
            max_iter=300,
        )
    sweep = fits[(1e-4, 1e-2, 1.0)]
    assert [entry["weight_decay"] for entry in sweep.log] == [1.0, 1e-2, 1e-4]  # strongest first
    assert sweep.score == min(entry["eval_loss"] for entry in sweep.log)
    assert sweep.weight_decay == min(sweep.log, key=lambda e: e["eval_loss"])["weight_decay"]
    assert sweep.score <= min(fits[(1e-4,)].score, fits[(1.0,)].score) + 1e-4  # warm starts converge alike


def test_folding_the_standardisation_leaves_the_outputs_unchanged():
    x = torch.randn(50, 4) * torch.tensor([0.1, 1.0, 10.0, 100.0]) + 3.0
    mean, std = standardiser(x)
    linear = nn.Linear(4, 2)
    before = linear((x - mean) / std)
    fold_standardisation(linear, mean, std)
    torch.testing.assert_close(linear(x), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multi_label", [False, True], ids=["genres", "tags"])
def test_a_projector_classifier_head_fitted_with_as_many_units_as_classes_loses_nothing(multi_label):
    """Fitting projector (8 units) -> classifier (3 classes) through 3 hidden units reaches the
    penalised loss of fitting all 8, and padding the 3 back to 8 with zeros keeps its logits and
    penalty."""
    torch.manual_seed(0)
    x = torch.randn(40, 12, dtype=torch.float64)
    y = (torch.rand(40, 3) < 0.4).double() if multi_label else torch.randint(0, 3, (40,))
    initial, embedder, decay = speech_head_modules(12, 8, 3).double(), chain_embedder(), 1e-2
    full = copy.deepcopy(initial)
    lbfgs_fit(full, embedder, x, y, multi_label, decay, max_iter=500)
    small = reduced_head(copy.deepcopy(initial), embedder)
    assert small["projector"].weight.shape == (3, 12) and small["classifier"].weight.shape == (3, 3)
    lbfgs_fit(small, embedder, x, y, multi_label, decay, max_iter=500)
    expanded = expanded_head(small, copy.deepcopy(initial), embedder)
    objective = {
        name: penalised_loss(head, embedder, x, y, multi_label, decay).item()
        for name, head in (("full", full), ("small", small), ("expanded", expanded))
    }
    assert objective["small"] <= objective["full"] + 1e-5
    assert objective["expanded"] == pytest.approx(objective["small"], abs=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(speech_head(expanded, x), speech_head(small, x), rtol=0, atol=1e-12)
    assert expanded["projector"].weight.shape == (8, 12) and expanded["classifier"].weight.shape == (3, 8)


def test_the_reduced_probe_head_has_the_models_shapes_and_reads_raw_features():
    """fit_head returns the model's projector (8 units) -> classifier, its units beyond the 3 classes
    zero, with the standardisation folded in: on raw features it gives the logits of the reduced
    head fitted on standardised ones."""
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 60)
    vx, vy = blobs(np.random.default_rng(5), 30)
    torch.manual_seed(1)
    initial, embedder, decay = speech_head_modules(6, 8, 3), chain_embedder(), 1e-2
    fit = fit_head(
        initial,
        embedder,
        torch.from_numpy(x),
        embedded(y),
        torch.from_numpy(vx),
        embedded(vy),
        task(),
        [decay],
        max_iter=300,
    )
    assert {n: p.shape for n, p in fit.head.named_parameters()} == {n: p.shape for n, p in initial.named_parameters()}
    assert not fit.head["projector"].weight[3:].any() and not fit.head["projector"].bias[3:].any()
    assert not fit.head["classifier"].weight[:, 3:].any()
    mean, std = standardiser(torch.from_numpy(x))
    by_hand = reduced_head(copy.deepcopy(initial), embedder)
    lbfgs_fit(by_hand, embedder, (torch.from_numpy(x) - mean) / std, torch.from_numpy(y), False, decay, max_iter=300)
    with torch.no_grad():
        torch.testing.assert_close(
            speech_head(fit.head, torch.from_numpy(vx)),
            speech_head(by_hand, (torch.from_numpy(vx) - mean) / std),
            rtol=1e-4,
            atol=1e-4,
        )


def test_a_two_layer_head_shrunk_to_zero_by_a_strong_penalty_is_refitted_under_a_weaker_one():
    """Penalty 1.0 shrinks projector -> classifier to zero on weak class signal; under 1e-3 zero is a
    saddle with zero gradient, so the warm start alone stays at chance while the initial head learns."""
    torch.manual_seed(2)
    y = torch.randint(0, 3, (300,))
    x = (0.2 * torch.randn(3, 12)[y] + torch.randn(300, 12)).numpy()
    initial = speech_head_modules(12, 8, 3)
    for module in initial.values():  # transformers' initialisation: small weights, zero biases
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)

    def fit(decays):
        return fit_head(
            initial,
            chain_embedder(),
            torch.from_numpy(x),
            embedded(y.numpy()),
            torch.from_numpy(x),
            embedded(y.numpy()),
            task(),
            decays,
            max_iter=500,
        )

    sweep, alone = fit([1.0, 1e-3]), fit([1e-3])
    assert sweep.log[0]["eval_loss"] == pytest.approx(np.log(3), abs=0.02)  # zero head: the class priors
    assert alone.log[0]["eval_loss"] < 0.9
    assert sweep.log[1]["eval_loss"] == pytest.approx(alone.log[0]["eval_loss"], abs=1e-4)


def test_a_head_with_no_fewer_classes_than_units_is_fitted_whole():
    assert reduced_head(speech_head_modules(6, 3, 3), chain_embedder()) is None
    assert reduced_head(nn.ModuleDict({"classifier": nn.Linear(6, 3)}), linear_embedder()) is None


def probe_args(realdata, run_dir, *overrides):
    return [
        "--recipe",
        "musicnn_pretrained_gtzan",
        f"data.root={realdata / 'gtzan'}",
        "data.split_scheme=random",
        "data.folds=4",
        "data.fold=1",
        "data.group_by=none",
        f"backbone.path={realdata / MUSICNN}",
        "data.num_workers=0",
        f"output_dir={run_dir}",
        *overrides,
    ]


@pytest.fixture(scope="module")
def real_probe(realdata, tmp_path_factory):
    """Won et al.'s MusiCNN probed on one fold of the real GTZAN clips (20 / 10 / 10 tracks)."""
    run_dir = tmp_path_factory.mktemp("probe") / "run"
    assert main(probe_args(realdata, run_dir, "backbone.mode=probe")) == 0
    return run_dir


@pytest.mark.slow
def test_a_baseline_probe_exports_a_model_that_predicts_its_own_test_scores(real_probe):
    """The probe scores cached window embeddings; the exported model, run by `predict` on each test
    file, gives the same track scores: the cache, the fitted head and the export agree."""
    metrics = json.loads((real_probe / "metrics.json").read_text())
    assert metrics["validation"]["probe_metric"] == "loss"
    assert metrics["validation"]["probe_weight_decay"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    test = TrackPredictions.load(real_probe / "predictions" / "test.npz")
    assert len(test.ids) == 10
    predictor = Predictor.from_pretrained(real_probe)
    for path, probs in zip(test.paths, test.probs):
        scores = {entry["label"]: entry["score"] for entry in predictor.predict(path, top_k=10)["labels"]}
        np.testing.assert_allclose([scores[name] for name in test.label_names], probs, atol=1e-4)
    assert metrics["test"]["accuracy"] > 0.3  # chance: 0.1


@pytest.mark.slow
def test_fine_tuning_starts_from_the_probe_and_keeps_the_pretrained_statistics(real_probe, realdata, tmp_path):
    """LP-FT: the head is fitted exactly as the probe fits it (the Trainer's step-0 validation loss
    is the probe's), batch-norm statistics stay the pretrained ones, and a fine-tune that only makes
    validation worse (a head learning rate of 5) ends with the probe's model."""
    run_dir = tmp_path / "lpft"
    assert (
        main(
            probe_args(
                realdata,
                run_dir,
                "train.max_steps=2",
                "train.batch_size=8",
                "train.head_lr=5",
                "train.warmup_ratio=0",
                "train.eval_steps=1",
                "train.save_steps=1",
            )
        )
        == 0
    )
    probe = json.loads((real_probe / "metrics.json").read_text())["validation"]
    tuned = json.loads((run_dir / "metrics.json").read_text())["validation"]
    history = json.loads((run_dir / "log_history.json").read_text())
    assert history[0]["step"] == 0 and history[0]["eval_loss"] == pytest.approx(probe["loss"], abs=1e-4)
    assert tuned["start_point"]["loss"] == pytest.approx(probe["loss"], abs=1e-4)
    later = [e["eval_loss"] for e in history if "eval_loss" in e and e["step"] > 0]
    assert later and min(later) > probe["loss"] and tuned["start_point"]["kept_start"]
    probe_scores = TrackPredictions.load(real_probe / "predictions" / "test.npz").probs
    np.testing.assert_allclose(
        TrackPredictions.load(run_dir / "predictions" / "test.npz").probs, probe_scores, atol=1e-4
    )
    pretrained = import_won_checkpoint(MusicnnModel, realdata / MUSICNN).state_dict()
    trained = load_file(str(run_dir / "checkpoint-2" / "model.safetensors"))  # after 2 training steps
    stats = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(trained[k], pretrained[k]) for k in stats)
    assert not torch.equal(trained["timbral.0.conv.weight"], pretrained["timbral.0.conv.weight"])  # it did train


@pytest.mark.parametrize(
    "path, slug",
    [
        (
            "../shared/realdata/pretrained/sota-music-tagging-models/mtat/musicnn/best_model.pth",
            "sota-music-tagging-models_mtat_musicnn_best_model.pth",
        ),  # was cut to 'rained_sota-...'
        ("m-a-p/MERT-v1-95M", "m-a-p_MERT-v1-95M"),
        ("/runs/my model/", "runs_my_model"),
        ("x" * 80, "x" * 60),
    ],
)
def test_the_embedding_cache_folder_names_whole_path_components(path, slug):
    assert path_slug(path) == slug


@pytest.mark.slow
def test_two_workers_embedding_one_split_embed_each_track_once(tiny_backbones, synthetic_root, tmp_path):
    """Two processes of one comparison (threads here) asking for the same split's embeddings: the
    second waits on the windows folder's lock and reads what the first wrote."""
    import threading

    from transformers import HubertModel

    from backbone_fixtures import build_tiny
    from finetune import recipe as recipes
    from finetune.data.recipe_data import recipe_dataset
    from finetune.probe import embed_split, embedder_for

    recipe = recipes.load(
        "demo",
        [
            f"data.root={synthetic_root}",
            "data.max_tracks=3",
            "data.num_workers=0",
            "model.name=hubert",
            f"backbone.path={tiny_backbones['hubert']}",
            "backbone.mode=probe",
        ],
    )
    split = recipe_dataset(recipe)["validation"]
    bundle = build_tiny(tiny_backbones, "hubert", mode="probe", labels=len(split.features["label"].names))
    embedder = embedder_for("hubert", bundle.model)
    forwards = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: forwards.append(1) if isinstance(module, HubertModel) else None
    )
    try:
        embed_split(recipe, split, "validation", bundle, embedder, tmp_path / "alone")
        alone, forwards[:] = len(forwards), []
        workers = [
            threading.Thread(
                target=embed_split, args=(recipe, split, "validation", bundle, embedder, tmp_path / "shared")
            )
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        handle.remove()
    assert alone > 0 and len(forwards) == alone
