"""Pretrained backbones: the named families (``FAMILIES``, families.py; ``BACKBONE_BUILDERS`` their
builders by recipe name), `auto` for any audio classifier checkpoint transformers builds, and
`encoder` for any plug-in encoder module (plugin.py; HEAR modules: hear.py).

Importing this package also registers the ``finetune_*`` model types (attention pooling, AST's
weighted layer sum, plug-in encoders) with transformers' Auto classes, so saved folders of those load by name.
"""

from finetune.backbones import plugin  # noqa: F401  registers the finetune_encoder model type
from finetune.backbones.auto import auto_family
from finetune.backbones.common import Family
from finetune.backbones.families import FAMILIES

# Recipe model name -> builder, for the named families (model.name=<family name>).
BACKBONE_BUILDERS = {name: family.build for name, family in FAMILIES.items()}
AUTO = "auto"  # model.name of `build_auto`: the checkpoint's config decides the family


def family_of(model_name: str, model) -> Family | None:
    """The Family of a recipe's built model: the named one, the checkpoint's for auto, None for a baseline
    or a plug-in encoder (plugin.py)."""
    if model_name == AUTO:
        return auto_family(model.config.to_dict())
    return FAMILIES.get(model_name)
