"""MusicGRU: MusicLSTM with GRU cells."""

from __future__ import annotations

from baselines.lstm import LSTMConfig, LSTMModel


class GRUConfig(LSTMConfig):
    model_type = "finetune_gru"


class GRUModel(LSTMModel):
    """A bidirectional GRU over spectrogram frames, mean-pooled over time."""

    config_class = GRUConfig
    cell = "gru"
