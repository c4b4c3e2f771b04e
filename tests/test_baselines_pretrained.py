"""Won et al.'s official MTAT weights: strict import, head surgery, the head's tag vocabulary
(backbone.tags) and sane tags on real GTZAN."""

import json

import numpy as np
import pytest
import soundfile
import soxr
import torch

from baselines import BASELINE_BUILDERS, MODEL_CLASSES
from baselines.loading import WON_VOCABULARIES, import_won_checkpoint, rename_won_keys
from baselines.msd_tags import MSD_TAGS
from baselines.mtat_tags import MTAT_TAGS
from finetune import export, recipe as recipes
from finetune.data.jamendo import subset_tags
from finetune.models import check_model_args
from finetune.recipe import BackboneConfig, RecipeError

TAGGERS = [name for name, model_class in MODEL_CLASSES.items() if model_class.won_renames]  # Won et al. weights
GTZAN_GENRES = "blues classical country disco hiphop jazz metal pop reggae rock".split()


def checkpoint(realdata, name):
    return realdata / "pretrained/sota-music-tagging-models/mtat" / name / "best_model.pth"


def test_packaged_tags_match_won_et_al(realdata):
    tags = np.load(realdata / "mtat/splits/tags.npy", allow_pickle=False)
    assert list(MTAT_TAGS) == [str(tag) for tag in tags]


def test_packaged_msd_tags_match_the_published_list(realdata):
    published = realdata / "pretrained/sota-music-tagging-models/msd_top50_tags.txt"
    assert list(MSD_TAGS) == published.read_text().splitlines()


@pytest.mark.slow
def test_msd_vocabulary_labels_the_same_weights(realdata):
    path = checkpoint(realdata, "musicnn")
    mtat = import_won_checkpoint(MODEL_CLASSES["musicnn"], path)
    msd = import_won_checkpoint(MODEL_CLASSES["musicnn"], path, tags="msd")
    assert msd.config.id2label == dict(enumerate(MSD_TAGS))
    for key, value in mtat.state_dict().items():
        assert torch.equal(msd.state_dict()[key], value), key
    # the builder with the vocabulary's own tags keeps the head as it is
    bundle = BASELINE_BUILDERS["musicnn"](50, list(MSD_TAGS), True, BackboneConfig(path=str(path), tags="msd"))
    assert torch.equal(bundle.model.classifier.weight, msd.classifier.weight)
    assert bundle.model.config.won_head == {"tags": "msd", "same_labels": True}


def test_the_jamendo_vocabulary_is_the_loaders_top50_so_a_jamendo_run_keeps_the_head(realdata):
    # Won et al.'s loader sorts the 50 tags (LabelBinarizer); the published list is already sorted
    published = (realdata / "jamendo/tags_top50.txt").read_text().split()
    assert list(WON_VOCABULARIES["jamendo"]) == sorted(published) == published
    row = (realdata / "jamendo/splits/split-0/autotagging_top50tags-train.tsv").read_text().splitlines()[1].split("\t")
    assert set(row[5:]) <= set(published)
    path = checkpoint(realdata, "musicnn")
    bundle = BASELINE_BUILDERS["musicnn"](
        50, subset_tags("top50tags"), True, BackboneConfig(path=str(path), tags="jamendo")
    )
    assert bundle.model.config.won_head == {"tags": "jamendo", "same_labels": True}
    assert bundle.model.config.id2label == dict(enumerate(published))


def test_a_vocabulary_file_labels_the_head_and_must_fit_it(realdata, tmp_path):
    path, vocabulary = checkpoint(realdata, "musicnn"), tmp_path / "vocabulary.txt"
    names = [f"tag {i}" for i in range(50)]
    vocabulary.write_text("\n".join(names) + "\n\n")  # blank lines are no tags
    model = import_won_checkpoint(MODEL_CLASSES["musicnn"], path, tags=str(vocabulary))
    assert model.config.id2label == dict(enumerate(names))
    vocabulary.write_text("\n".join(names[:49]))
    with pytest.raises(RecipeError, match=f"backbone.tags: {vocabulary} has 49 tags but the head of .* has 50 outputs"):
        import_won_checkpoint(MODEL_CLASSES["musicnn"], path, tags=str(vocabulary))
    vocabulary.write_text("\n".join(names[:49] + ["tag 3"]))
    with pytest.raises(RecipeError, match="lists 'tag 3' more than once"):
        import_won_checkpoint(MODEL_CLASSES["musicnn"], path, tags=str(vocabulary))
    with pytest.raises(RecipeError, match="'fma' is not mtat, msd, jamendo or a file"):
        import_won_checkpoint(MODEL_CLASSES["musicnn"], path, tags="fma")


def test_backbone_tags_only_for_won_checkpoints(realdata):
    path = checkpoint(realdata, "musicnn")
    check_model_args(recipes.load("musicnn_pretrained_gtzan", [f"backbone.path={path}", "backbone.tags=msd"]))
    with pytest.raises(RecipeError, match="backbone.tags: names the head vocabulary of a Won et al. .pth"):
        check_model_args(recipes.load("demo", ["backbone.tags=msd"]))
    with pytest.raises(RecipeError, match="backbone.tags: model 'mert' does not import Won et al."):
        check_model_args(recipes.load("mert_gtzan", ["backbone.tags=msd"]))
    with pytest.raises(RecipeError, match="is not mtat, msd, jamendo or a file"):
        check_model_args(recipes.load("musicnn_pretrained_gtzan", [f"backbone.path={path}", "backbone.tags=msdd"]))


def card_sentence(tmp_path, path, labels, multi_label, *overrides) -> str:
    """The model card's body for a musicnn built from the real checkpoint with these labels, its
    config read back from a saved folder."""
    recipe = recipes.load("musicnn_pretrained_gtzan", [f"backbone.path={path}", *overrides])
    bundle = BASELINE_BUILDERS["musicnn"](len(labels), labels, multi_label, recipe.backbone)
    bundle.model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    return export.model_card(recipe, {}, config).split("---\n", 2)[2]


def test_the_card_names_the_head_vocabulary(realdata, tmp_path):
    path = checkpoint(realdata, "musicnn")
    assert (
        "It started from a Won et al. checkpoint whose head used the Million Song Dataset top-50 tags; "
        "that head was replaced for this task's labels."
    ) in card_sentence(tmp_path, path, GTZAN_GENRES, False, "backbone.tags=msd")
    assert "whose head used the MagnaTagATune top-50 tags; that head was kept for the same tags" in card_sentence(
        tmp_path, path, sorted(MTAT_TAGS), True, "backbone.head_init=random"
    )
    assert "that head was refitted by a linear probe" in card_sentence(tmp_path, path, sorted(MTAT_TAGS), True)
    assert "Won et al. checkpoint" not in export.model_card(
        recipes.load("cnn_gtzan"), {}, {"model_type": "finetune_simple_cnn", "id2label": {"0": "rock"}}
    )


@pytest.mark.parametrize("name", TAGGERS)
def test_strict_import_maps_every_tensor(realdata, name):
    path = checkpoint(realdata, name)
    state = torch.load(path, weights_only=True, map_location="cpu")
    model = import_won_checkpoint(MODEL_CLASSES[name], path)
    renamed = rename_won_keys(state, MODEL_CLASSES[name].won_renames)
    assert len(renamed) == len(state)  # no two keys collapse
    ours = model.state_dict()
    assert set(renamed) == set(ours)  # no missing and no unexpected keys
    for key, value in renamed.items():
        assert torch.equal(ours[key], value), key
    assert model.config.id2label == dict(enumerate(MTAT_TAGS))
    assert model.config.problem_type == "multi_label_classification"


@pytest.mark.slow
@pytest.mark.parametrize("name", TAGGERS)
def test_pretrained_builder_swaps_the_head_for_gtzan(realdata, name):
    path = checkpoint(realdata, name)
    imported = import_won_checkpoint(MODEL_CLASSES[name], path)
    bundle = BASELINE_BUILDERS[name](10, GTZAN_GENRES, False, BackboneConfig(path=str(path)))
    model = bundle.model
    assert model.classifier.out_features == 10
    assert model.config.problem_type == "single_label_classification"
    body = {k: v for k, v in imported.state_dict().items() if not k.startswith("classifier.")}
    for key, value in body.items():
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 48000)).logits.shape == (2, 10)


def test_pretrained_builder_reorders_the_head_for_the_same_tags(realdata):
    path = checkpoint(realdata, "musicnn")
    imported = import_won_checkpoint(MODEL_CLASSES["musicnn"], path)
    tags = sorted(MTAT_TAGS)
    model = BASELINE_BUILDERS["musicnn"](50, tags, True, BackboneConfig(path=str(path))).model
    rows = [MTAT_TAGS.index(tag) for tag in tags]
    assert torch.equal(model.classifier.weight, imported.classifier.weight[rows])
    x = torch.randn(1, 48000)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).logits, imported(x).logits[:, rows])


def test_pretrained_with_a_mismatched_architecture_fails_loudly(realdata):
    path = checkpoint(realdata, "fcn")
    with pytest.raises(RuntimeError, match="size mismatch"):
        BASELINE_BUILDERS["fcn"](2, ["a", "b"], False, BackboneConfig(path=str(path)), channels=(8,) * 5)


def tag_scores(model, path, window_seconds: float = 3.0) -> torch.Tensor:
    """Mean sigmoid tag scores over the 3 s windows (MusiCNN's training length) of one file."""
    y, rate = soundfile.read(path, dtype="float32")
    y = soxr.resample(y, rate, 16000)
    size = int(window_seconds * 16000)
    windows = torch.from_numpy(y[: len(y) // size * size].reshape(-1, size))  # (N, size)
    with torch.no_grad():
        return torch.sigmoid(model(input_values=windows).logits).mean(dim=0)  # (50,)


@pytest.mark.slow
def test_pretrained_musicnn_tags_real_gtzan_clips_sensibly(realdata):
    model = import_won_checkpoint(MODEL_CLASSES["musicnn"], checkpoint(realdata, "musicnn"))
    genres = realdata / "gtzan/genres"
    scores = {
        genre: torch.stack([tag_scores(model, f) for f in sorted((genres / genre).glob("*.wav"))])
        for genre in ("classical", "metal")
    }
    assert all(len(s) == 4 for s in scores.values())
    mean = {genre: s.mean(dim=0) for genre, s in scores.items()}
    classical, metal, rock = (MTAT_TAGS.index(t) for t in ("classical", "metal", "rock"))
    assert mean["classical"][classical] > mean["metal"][classical]
    assert mean["metal"][metal] > mean["classical"][metal]
    assert mean["metal"][rock] > mean["classical"][rock]
    # The top tag of the classical clips is "classical" itself.
    assert MTAT_TAGS[int(mean["classical"].argmax())] == "classical"


def test_pretrained_weights_fix_their_front_end(realdata, tmp_path):
    """Won et al. weights were trained on the mel front end, a saved folder on its config's: asking for
    another is refused in one line, before torch loads them, and by the importer itself."""
    path = checkpoint(realdata, "musicnn")
    with pytest.raises(RecipeError) as err:
        check_model_args(recipes.load("musicnn_pretrained_gtzan", [f"backbone.path={path}", "model.args.frontend=cqt"]))
    assert str(err.value) == (
        f"model.args.frontend: cqt was asked, but backbone.path {path} was trained with the mel "
        "front end; its weights fix it (drop model.args.frontend or start from scratch)"
    )
    check_model_args(recipes.load("musicnn_pretrained_gtzan", [f"backbone.path={path}", "model.args.frontend=mel"]))
    with pytest.raises(
        RecipeError,
        match="holds Won et al. weights trained on the mel front end with batch norm, not cqt with batch norm",
    ):
        BASELINE_BUILDERS["musicnn"](10, GTZAN_GENRES, False, BackboneConfig(path=str(path)), frontend="cqt")
    saved = BASELINE_BUILDERS["simple_cnn"](2, ["a", "b"], False, BackboneConfig(), frontend="mfcc", n_mels=32)
    saved.model.save_pretrained(tmp_path / "model")
    with pytest.raises(RecipeError, match="frontend: mel was asked, but .* was trained with the mfcc front end"):
        check_model_args(recipes.load("demo", [f"backbone.path={tmp_path / 'model'}", "model.args.frontend=mel"]))
    with pytest.raises(RecipeError, match="frontend: 'gammatone' is not one of mel, stft, cqt, mfcc, pcen, learnable"):
        check_model_args(recipes.load("demo", ["model.args.frontend=gammatone"]))
