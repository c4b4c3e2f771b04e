"""The named backbone families, in the order `finetune models` lists them: the one list that
recipes' model names, `auto`'s detection, model-card licences and error messages read.

Adding a family is one module that defines its `Family` (with `build`, `auto_types`, licence) and
one entry here.
"""

from finetune.backbones.ast import AST
from finetune.backbones.common import Family
from finetune.backbones.mert import MERT
from finetune.backbones.wav2vec2 import HUBERT, WAV2VEC2

FAMILIES: dict[str, Family] = {family.name: family for family in (MERT, AST, WAV2VEC2, HUBERT)}
