"""The training DataLoader never hands batch norm a batch of one at the end of an epoch."""

import json

import pytest

from finetune.cli import main


@pytest.mark.slow
def test_epoch_ending_in_a_batch_of_one_trains(tmp_path, synthetic_root):
    """9 training tracks in batches of 4 would leave one track for the last step: musicnn's dense
    batch norm cannot train on it, so that remainder is dropped (the next epoch draws new crops)."""
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--recipe",
                "demo",
                "model.name=musicnn",
                "model.args={n_mels: 32}",
                "train.epochs=1",
                "train.batch_size=4",
                "data.max_tracks=9",
                "data.crops_per_track=1",
                "data.num_workers=0",
                f"data.root={synthetic_root}",
                f"output_dir={run_dir}",
            ]
        )
        == 0
    )
    state = json.loads((run_dir / "log_history.json").read_text())
    assert max(e["step"] for e in state) == 2, "two full batches, the lone track left out"
