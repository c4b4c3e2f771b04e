"""Published figures sit beside a run's score only when the run scored the whole published test
split; otherwise the report and the model card say how many of its tracks the run had."""

import numpy as np
from huggingface_hub import ModelCard

from finetune import export, published, recipe as recipes
from finetune.evaluation import classification_metrics, tagging_metrics
from finetune.report import write_reports

HISTORY = [{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5, "eval_accuracy": 0.5}]
GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
GTZAN = recipes.from_dict({"name": "cnn_gtzan", "data": {"name": "gtzan", "allow_missing": True}})


def genre_test(tracks: int) -> dict:
    """Test metrics of a genre run that scored `tracks` tracks."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, tracks)
    probs = rng.random((tracks, 10)) + np.eye(10)[labels]
    return classification_metrics(probs / probs.sum(1, keepdims=True), labels, GENRES)


def report(tmp_path, recipe, test: dict) -> str:
    write_reports(tmp_path, recipe, {"test": test}, HISTORY)
    return (tmp_path / "report.md").read_text()


def test_every_published_split_records_its_test_size():
    assert {row.split for row in published.PUBLISHED} <= set(published.PUBLISHED_TEST_TRACKS)
    assert published.PUBLISHED_TEST_TRACKS["gtzan/fault_filtered"] == 290
    assert published.PUBLISHED_TEST_TRACKS["mtat/standard/top50"] == 4332


def test_a_run_on_part_of_the_published_test_split_is_not_set_beside_published_figures(tmp_path):
    md = report(tmp_path, GTZAN, genre_test(20))
    assert "Published results on this split" not in md and "0.7480" not in md
    assert (
        "## Published results\n\n- This run was tested on 20 tracks; the published test split has 290: "
        "published figures are not comparable and are not shown." in md
    )


def test_an_unreadable_test_file_makes_the_split_partial(tmp_path):
    test = {**genre_test(289), "skipped_files": ["/data/gtzan/jazz/jazz.00001.wav (truncated)"]}
    assert "tested on 289 tracks; the published test split has 290" in report(tmp_path, GTZAN, test)


def test_the_whole_published_test_split_gets_the_published_table(tmp_path):
    md = report(tmp_path, GTZAN, genre_test(290))
    assert "## Published results on this split" in md and "| MERT-95M, frozen, MLP probe | 0.7480 |" in md
    rng = np.random.default_rng(1)
    targets = (rng.random((4332, 5)) < 0.3).astype(int)
    tags = tagging_metrics(
        np.clip(0.5 * targets + 0.6 * rng.random(targets.shape), 0, 1),
        targets,
        ["rock", "pop", "guitar", "piano", "drums"],
    )
    mtat = recipes.from_dict({"name": "tags", "data": {"name": "mtat"}})
    assert "| MusiCNN (Pons et al. 2018) | 0.9109 | 0.4509 |" in report(tmp_path, mtat, tags)


def test_the_model_card_does_not_claim_the_standard_split_for_part_of_it():
    config = {
        "model_type": "finetune_simple_cnn",
        "id2label": dict(enumerate(GENRES)),
        "problem_type": "single_label_classification",
    }
    card = ModelCard(export.model_card(GTZAN, {"accuracy": 0.7, "num_tracks": 20}, config))
    assert card.data.eval_results[0].dataset_args["partial"] == "tested on 20 tracks; the published test split has 290"
    assert (
        "- test: tested on 20 tracks; the published test split has 290, so these scores are not "
        "comparable with published ones" in card.text
    )
    whole = export.model_card(GTZAN, {"accuracy": 0.7, "num_tracks": 290}, config)
    assert "partial" not in whole and "not comparable" not in whole


def test_published_figures_and_the_run_each_state_their_artist_leak(tmp_path):
    leak = {
        "group_by": "artist",
        "groups_known": True,
        "test_tracks": 290,
        "test_tracks_sharing": 3,
        "groups_shared": 2,
    }
    md = report(tmp_path, GTZAN, {**genre_test(290), "artist_leakage": leak})
    assert "Artists: the published split keeps each artist name on one side" in md
    assert "this run: artists: 3 of 290 test tracks share an artist with training (2 artists on both sides)" in md
    tags = tagging_metrics(
        np.eye(5)[np.arange(4332) % 5],
        np.eye(5, dtype=int)[np.arange(4332) % 5],
        ["rock", "pop", "guitar", "piano", "drums"],
    )
    mtat = recipes.from_dict({"name": "tags", "data": {"name": "mtat"}})
    assert "Artists: the published split does not keep artists apart" in report(tmp_path, mtat, tags)
    assert "this run: not recorded" in report(tmp_path, mtat, tags)


def test_a_whole_jamendo_split_0_run_gets_the_dataset_papers_figures_and_other_splits_do_not(tmp_path):
    rng = np.random.default_rng(2)
    targets = (rng.random((11356, 3)) < 0.3).astype(int)
    tags = tagging_metrics(rng.random(targets.shape), targets, ["genre---rock", "genre---pop", "mood/theme---calm"])
    split0 = recipes.from_dict({"name": "tags", "data": {"name": "jamendo", "subset": "top50tags"}})
    md = report(tmp_path, split0, tags)
    assert "| FCN on mel-spectrograms (dataset paper baseline) | 0.7538 | 0.1915 |" in md
    assert "Artists: the published split keeps artists apart" in md
    split1 = recipes.from_dict({"name": "tags", "data": {"name": "jamendo", "subset": "top50tags", "split_number": 1}})
    assert "FCN on mel-spectrograms" not in report(tmp_path, split1, tags)
