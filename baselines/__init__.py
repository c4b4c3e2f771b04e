"""From-scratch baselines as transformers models; ``BASELINE_BUILDERS`` maps names to builders."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from baselines import cnn_lstm, crnn, deep_cnn, fcn, gru, lstm, musicnn, samplecnn, simple_cnn
from baselines.loading import import_won_checkpoint

BASELINE_BUILDERS = {
    "simple_cnn": simple_cnn.build,
    "fcn": fcn.build,
    "deep_cnn": deep_cnn.build,
    "musicnn": musicnn.build,
    "lstm": lstm.build,
    "gru": gru.build,
    "cnn_lstm": cnn_lstm.build,
    "crnn": crnn.build,
    "samplecnn": samplecnn.build,
}

MODEL_CLASSES = {
    "simple_cnn": simple_cnn.SimpleCNNModel,
    "fcn": fcn.FCNModel,
    "deep_cnn": deep_cnn.DeepCNNModel,
    "musicnn": musicnn.MusicnnModel,
    "lstm": lstm.LSTMModel,
    "gru": gru.GRUModel,
    "cnn_lstm": cnn_lstm.CNNLSTMModel,
    "crnn": crnn.CRNNModel,
    "samplecnn": samplecnn.SampleCNNModel,
}

for _model in MODEL_CLASSES.values():
    AutoConfig.register(_model.config_class.model_type, _model.config_class)
    AutoModel.register(_model.config_class, _model)
    AutoModelForAudioClassification.register(_model.config_class, _model)

__all__ = ["BASELINE_BUILDERS", "MODEL_CLASSES", "import_won_checkpoint"]
