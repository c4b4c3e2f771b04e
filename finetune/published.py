"""Published test scores on the standard splits, as data, for the "published results" table.

A row belongs to a (dataset, split) key built from a recipe by `split_key`; the report lists the
rows of the run's key next to the run's own scores. Scores are fractions (papers print percent).
Add a row only with its source.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from finetune.data import DATASET_BUILDERS, DATASET_MODULES, jamendo


class Published(NamedTuple):
    split: str  # a `split_key` value
    model: str
    scores: dict  # metric name as in metrics.json -> value
    source: str


PUBLISHED = (
    Published(
        "mtat/standard/top50",
        "MERT-95M, frozen, MLP probe",
        {"roc_auc_macro": 0.910, "pr_auc_macro": 0.393},
        "MARBLE benchmark (Yuan et al., NeurIPS 2023)",
    ),
    Published(
        "mtat/standard/top50",
        "MusiCNN (Pons et al. 2018)",
        {"roc_auc_macro": 0.9109, "pr_auc_macro": 0.4509},
        "released test predictions (philtgun/music-tagging-benchmark); recomputed in tests/test_evaluation.py",
    ),
    Published(
        "gtzan/fault_filtered",
        "MERT-95M, frozen, MLP probe",
        {"accuracy": 0.748},
        "MARBLE benchmark (Yuan et al., NeurIPS 2023)",
    ),
    Published(
        "gtzan/fault_filtered",
        "MuQ (160K h in-house pretraining), frozen, probe",
        {"accuracy": 0.855},
        "MuQ paper's MARBLE table (Zhu et al. 2025, arXiv:2501.01108); the released MSD weights may score lower",
    ),
    Published(
        "mtat/standard/top50",
        "MuQ (160K h in-house pretraining), frozen, probe",
        {"roc_auc_macro": 0.914, "pr_auc_macro": 0.403},
        "MuQ paper's MARBLE table (Zhu et al. 2025, arXiv:2501.01108); the released MSD weights may score lower",
    ),
    Published(
        "jamendo/official/split0-moodtheme",
        "VGG-ish on mel-spectrograms (task baseline)",
        {"roc_auc_macro": 0.725821, "pr_auc_macro": 0.107734},
        "MediaEval 2019 Emotion and Theme Recognition task (Bogdanov et al. 2019); "
        "MTG/mtg-jamendo-dataset results/mediaeval/baseline_vggish_results.tsv",
    ),
    *(
        Published(
            f"jamendo/official/split0-{subset}",
            "FCN on mel-spectrograms (dataset paper baseline)",
            {"roc_auc_macro": roc_auc, "pr_auc_macro": pr_auc},
            "Bogdanov et al., ICML 2019 ML4MD workshop: mean over the tags of MTG/mtg-jamendo-dataset "
            f"results/ml4md2019/auc_{table}.tsv, which the repository gives for its five splits together",
        )
        for subset, table, roc_auc, pr_auc in (
            ("top50tags", "top50", 0.7538, 0.1915),
            ("genre", "genre", 0.7799, 0.1109),
            ("instrument", "instrument", 0.6743, 0.1276),
            ("moodtheme", "mood", 0.6735, 0.0814),
        )
    ),
)
JAMENDO_SPLITS = {
    f"jamendo/official/{jamendo.split_detail(subset, number)}": counts
    for (number, subset), counts in jamendo.PUBLISHED_COUNTS.items()
}
# Tracks in the test split that the figures above score, per split key: GTZAN fault-filtered (Kereliuk
# et al. 2015); MTAT folders d-f keeping clips with a top-50 tag (Lee et al. 2017, finetune/data/mtat.py);
# every MTG-Jamendo split and subset (finetune/data/jamendo.py), so a run on part of one is marked as such.
PUBLISHED_TEST_TRACKS = {
    "gtzan/fault_filtered": 290,
    "mtat/standard/top50": 4332,
    **{key: counts[2] for key, counts in JAMENDO_SPLITS.items()},
}
# Whether each published split keeps artists apart: the figures above were measured on it, leaky or not.
PUBLISHED_SPLIT_ARTISTS = {
    "gtzan/fault_filtered": "keeps each artist name on one side (Sturm's index), but three collaborations link a "
    "training artist to a validation or test one",
    "mtat/standard/top50": "does not keep artists apart (its folders 0-b / c / d-f share artists)",
    **dict.fromkeys(
        JAMENDO_SPLITS,
        "keeps artists apart (no artist in two of train / validation / test, by "
        "design; tests/test_data_jamendo.py checks the published files)",
    ),
}


def builder_defaults(name: str) -> dict:
    """Keyword defaults of a dataset builder (what a recipe's null options resolve to)."""
    params = inspect.signature(DATASET_BUILDERS[name]).parameters
    return {key: p.default for key, p in params.items() if p.default is not inspect.Parameter.empty}


def split_key(recipe) -> str:
    """'<dataset>/<split scheme>[/<its module's split_detail(options)>]' (e.g. mtat/standard/top50),
    null options at their defaults."""
    data = recipe.data
    options = {**builder_defaults(data.name), **{k: v for k, v in vars(data).items() if v is not None}}
    key = f"{data.name}/{options.get('split_scheme', 'official')}"
    detail = getattr(DATASET_MODULES[data.name], "split_detail", None)
    if detail is not None:
        key += f"/{detail(**options)}"
    if data.folds:  # a cross-validation fold is a split of its own; no published figure matches it
        key += f"/fold{data.fold}of{data.folds}"
    return key


def published_for(recipe) -> list[Published]:
    """Published rows on the same dataset and split as `recipe`."""
    key = split_key(recipe)
    return [row for row in PUBLISHED if row.split == key]


def partial_test_split(recipe, test: dict) -> str:
    """How many tracks of its published test split the run scored (test metrics' `num_tracks`,
    unreadable files left out), when that is not the whole split; '' when it is, or when nothing
    is published for the split. Published figures are comparable only on the whole split."""
    size = PUBLISHED_TEST_TRACKS.get(split_key(recipe))
    scored = test.get("num_tracks")
    if size is None or scored == size:
        return ""
    return (
        f"tested on {scored if scored is not None else 'an unrecorded number of'} tracks; the published "
        f"test split has {size}"
    )
