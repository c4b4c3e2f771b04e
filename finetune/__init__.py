"""finetune: fine-tune pretrained audio models and train from-scratch baselines for music
genre classification and tagging, through one transformers Trainer."""

__version__ = "0.1.0"
