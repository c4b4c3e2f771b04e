"""`compare`: one table and plot for runs on the same split, a clear refusal otherwise."""

import shutil

import matplotlib.image
import pytest
import yaml

from finetune import recipe as recipes
from finetune.cli import main
from finetune.compare import ComparisonError, compare


def copy_run(demo_run, folder, *overrides):
    """A copy of the demo run whose recipe.yaml has dotted overrides applied (e.g. seed=3)."""
    shutil.copytree(demo_run, folder)
    values = recipes.apply_overrides(yaml.safe_load((folder / "recipe.yaml").read_text()), list(overrides))
    (folder / "recipe.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return folder


def test_compare_writes_one_table_and_plot(demo_run, tmp_path, capsys):
    a = copy_run(demo_run, tmp_path / "runs" / "cnn")
    b = copy_run(demo_run, tmp_path / "runs" / "cnn_lr", "train.lr=0.01")
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    scores, paired = capsys.readouterr().out.split("## Paired tests against runs/cnn")
    rows = [line for line in scores.splitlines() if line.startswith("| runs/cnn")]
    assert len(rows) == 2 and "simple_cnn" in rows[0]
    assert "[" in rows[0], "accuracy with its bootstrap interval"
    assert "| runs/cnn_lr | accuracy | +0.0000 |" in paired, "the same predictions: no difference"
    assert (tmp_path / "cmp" / "compare.md").read_text().count("| runs/cnn") == 3
    assert matplotlib.image.imread(tmp_path / "cmp" / "compare.png").ndim == 3


def test_compare_refuses_runs_on_different_splits(demo_run, tmp_path, capsys):
    a = copy_run(demo_run, tmp_path / "a")
    other_seed = copy_run(demo_run, tmp_path / "b", "seed=3")  # the random split follows the seed
    with pytest.raises(ComparisonError, match="split seed differs"):
        compare([a, other_seed], tmp_path / "out")
    other_scheme = copy_run(demo_run, tmp_path / "c", "data.split_scheme=fault_filtered")
    assert main(["compare", str(a), str(other_scheme)]) == 2
    err = capsys.readouterr().err
    assert "cannot compare" in err and "synthetic/random" in err and "synthetic/fault_filtered" in err
    assert not (tmp_path / "out").exists()
