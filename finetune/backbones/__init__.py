"""Pretrained backbones (MERT, AST, wav2vec2, HuBERT, and `auto` for any audio classifier checkpoint
transformers builds); ``BACKBONE_BUILDERS`` maps the named families' recipe names to builders.

Importing this package also registers the ``finetune_*`` model types (attention pooling, AST's
weighted layer sum) with transformers' Auto classes, so saved folders of those load by name.
"""

from finetune.backbones.ast import AST, build_ast
from finetune.backbones.auto import auto_family, build_auto
from finetune.backbones.common import Family
from finetune.backbones.mert import MERT, build_mert
from finetune.backbones.wav2vec2 import HUBERT, WAV2VEC2, build_hubert, build_wav2vec2

BACKBONE_BUILDERS = {
    "mert": build_mert,
    "ast": build_ast,
    "wav2vec2": build_wav2vec2,
    "hubert": build_hubert,
}
AUTO = "auto"  # model.name of `build_auto`: the checkpoint's config decides the family

# Recipe model name -> what the probe and the tests need to know about that backbone.
FAMILIES = {"mert": MERT, "ast": AST, "wav2vec2": WAV2VEC2, "hubert": HUBERT}


def family_of(model_name: str, model) -> Family | None:
    """The Family of a recipe's built model: the named one, the checkpoint's for auto, None for a baseline."""
    if model_name == AUTO:
        return auto_family(model.config.to_dict())
    return FAMILIES.get(model_name)
