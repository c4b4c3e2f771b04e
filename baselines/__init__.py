"""From-scratch baselines as transformers models: ``MODEL_CLASSES`` maps recipe names to model classes,
``BASELINE_BUILDERS`` to the builders made from them."""

from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification

from baselines import cnn_lstm, crnn, deep_cnn, fcn, gru, lstm, musicnn, samplecnn, simple_cnn
from baselines.loading import import_won_checkpoint, make_builder

# Recipe model.name -> the baseline's model class; its builder is made from the class (its config's
# fields are the builder's options).
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
BASELINE_BUILDERS = {name: make_builder(model) for name, model in MODEL_CLASSES.items()}

for _model in MODEL_CLASSES.values():
    AutoConfig.register(_model.config_class.model_type, _model.config_class)
    AutoModel.register(_model.config_class, _model)
    AutoModelForAudioClassification.register(_model.config_class, _model)

__all__ = ["BASELINE_BUILDERS", "MODEL_CLASSES", "import_won_checkpoint"]
