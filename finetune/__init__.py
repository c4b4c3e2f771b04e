"""finetune: fine-tune pretrained audio models and train from-scratch baselines for music
genre classification and tagging, through one transformers Trainer."""

__version__ = "0.2.0"  # the one source (pyproject.toml reads it); run.json records it since 0.2.0
