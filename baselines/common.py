"""Shared config, front end and PreTrainedModel base of every from-scratch baseline."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from finetune.augment import SpecAugment
from finetune.bundle import label_config
from finetune.features import build_frontend


class BaselineConfig(PreTrainedConfig):
    """Settings every baseline has; each model subclasses it with its own ``model_type``."""

    model_type = "finetune_baseline"
    sample_rate: int = 16000
    dropout: float = 0.5  # before the final linear layer


class SpectrogramConfig(BaselineConfig):
    """Adds the spectrogram front end; defaults are Won et al. 2020's (16 kHz, 512/256, 96 HTK mels)."""

    frontend: str = "mel"  # a name in finetune.features.FRONTENDS; mel is Won et al.'s
    frontend_norm: str = "batch"  # batch (BatchNorm2d) | instance (per-example mean and std) | none
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96  # also the bands under mfcc, pcen and learnable
    f_min: float = 0.0  # cqt: its lowest bin, C1 (32.7 Hz) when 0
    f_max: float | None = None  # None: sample_rate / 2 (not used by cqt)
    mel_htk: bool = True
    mel_norm: str | None = None
    n_mfcc: int = 20  # mfcc: coefficients kept
    cqt_bins: int = 84  # cqt: bins from f_min
    bins_per_octave: int = 12  # cqt
    freq_mask: int = 0  # SpecAugment: widest frequency mask in bins (0: off)
    time_mask: int = 0  # SpecAugment: widest time mask in frames (0: off)
    num_masks: int = 2  # SpecAugment: masks of each kind per example


# model.args.frontend_norm -> the normalisation of the front end's output (B, 1, F, T).
FRONTEND_NORMS = {"batch": lambda: nn.BatchNorm2d(1), "instance": lambda: nn.InstanceNorm2d(1), "none": nn.Identity}


class SpectrogramFrontend(nn.Module):
    """(B, T) waveform -> (B, 1, bins, frames): the configured front end, its normalisation, and
    SpecAugment when training. ``bins`` is the front end's output height."""

    def __init__(self, config: SpectrogramConfig):
        super().__init__()
        if config.frontend_norm not in FRONTEND_NORMS:
            raise ValueError(f"frontend_norm: {config.frontend_norm!r} is not one of {', '.join(FRONTEND_NORMS)}")
        self.transform = build_frontend(config)
        self.bins = self.transform.bins
        self.norm = FRONTEND_NORMS[config.frontend_norm]()
        self.spec_augment = SpecAugment(config.freq_mask, config.time_mask, config.num_masks)

    def represent(self, waveform: torch.Tensor) -> torch.Tensor:
        """The front end's representation (B, bins, frames), before normalisation and SpecAugment."""
        return self.transform(waveform)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = self.represent(waveform).unsqueeze(1)  # (B, 1, F, T)
        return self.spec_augment(self.norm(spec))


class BaselinePreTrainedModel(PreTrainedModel):
    """Base of every baseline: ``embed`` (B, T) -> (B, D), then dropout and a linear classifier.

    A subclass sets ``config_class``, builds its layers after ``super().__init__(config)``, ends
    its ``__init__`` with ``self.add_classifier(D)`` and implements ``embed``. Models that can
    import Won et al.'s MTAT weights list key-prefix renames from their state dict in
    ``won_renames``.
    """

    config_class = BaselineConfig
    main_input_name = "input_values"
    base_model_prefix = "baseline"
    head_module_names = ("classifier",)  # what a probe fits and a fine-tune's head learning rate covers
    won_renames: tuple[tuple[str, str], ...] = ()

    def __init__(self, config: BaselineConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)

    def add_classifier(self, in_features: int) -> None:
        """The last layer, (B, in_features) -> (B, num_labels); then transformers' post_init."""
        self.classifier = nn.Linear(in_features, self.config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own defaults (Kaiming-uniform convs, unit batch norms) suit these small nets.
        if module is not self and hasattr(module, "reset_parameters"):
            module.reset_parameters()

    def embed(self, input_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def freeze_batch_norm(self) -> None:
        """Keep every batch norm in eval mode from now on, training included: its statistics stay
        the pretrained ones, so a small fine-tuning set's batches do not shift the features the
        head was fitted on (`train.freeze_batch_norm`)."""
        self.batch_norm_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "batch_norm_frozen", False):
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Logits (B, num_labels); the loss is left to the Trainer, and padding is not masked."""
        logits = self.classifier(self.dropout(self.embed(input_values)))  # (B, num_labels)
        return SequenceClassifierOutput(logits=logits)

    def set_labels(self, label_names: list[str], multi_label: bool) -> None:
        """Point the head at ``label_names``: reorder rows for the same names, else a fresh head."""
        old = [self.config.id2label[i] for i in range(self.classifier.out_features)]
        if old != list(label_names):
            head = nn.Linear(self.classifier.in_features, len(label_names))
            if sorted(old) == sorted(label_names):
                rows = [old.index(name) for name in label_names]
                head.load_state_dict({k: v[rows] for k, v in self.classifier.state_dict().items()})
            self.classifier = head.to(self.classifier.weight.device)
        self.config.update(label_config(label_names, multi_label))


class SpectrogramModel(BaselinePreTrainedModel):
    """A baseline whose ``self.frontend`` turns (B, T) waveforms into (B, 1, bins, frames); layers
    sized by the frequency axis read ``self.frontend.bins``."""

    config_class = SpectrogramConfig

    def __init__(self, config: SpectrogramConfig):
        super().__init__(config)
        self.frontend = SpectrogramFrontend(config)


def probe_features(
    model: BaselinePreTrainedModel, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The embedding the classifier reads, as the probe caches it: (B, T) -> (B, 1, D) (one layer)."""
    return model.embed(input_values).unsqueeze(1)


def probe_head(modules: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """The classifier on embeddings (B, D) -> logits (B, C) (dropout is off outside training)."""
    return modules.classifier(pooled)
