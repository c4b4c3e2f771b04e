"""What `backbone.encoder` may name, read without torch: `package.module:factory`, `hear:package.module`,
or a name an installed package registers in the entry-point group `finetune.encoders`
(`finetune.backbones.plugin` builds the encoder; `checks` and `finetune models` only read names).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from finetune.recipe import listed

ENTRY_POINT_GROUP = "finetune.encoders"  # installed packages register `name = package.module:factory`
PACKAGED = {"muq": "finetune.encoders.muq:muq_large"}  # the toolkit's own encoders (finetune/encoders/)
HEAR_PREFIX = "hear:"  # backbone.encoder=hear:package.module
SPEC = re.compile(r"(hear:[A-Za-z_][\w.]*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)")


def registered_encoders() -> dict[str, str]:
    """Encoder name -> factory spec: the installed packages' `finetune.encoders` entry points and the
    toolkit's own (PACKAGED), whose names keep their meaning whatever is installed."""
    installed = {point.name: point.value for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**installed, **PACKAGED}


def resolve_spec(spec: str) -> str:
    """`backbone.encoder` as a factory spec: a registered name is looked up, a spec checked."""
    registered = registered_encoders()
    if spec in registered:
        return registered[spec]
    if not SPEC.fullmatch(spec):
        raise ValueError(
            f"backbone.encoder={spec}: not package.module:factory, hear:package.module or a "
            f"registered encoder ({listed(sorted(registered))})"
        )
    return spec


def cause(err: Exception) -> str:
    """An exception from the user's code, in one line: its type and its message's first line."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def module_of(spec: str) -> str:
    """The module a resolved spec imports."""
    return spec.removeprefix(HEAR_PREFIX).partition(":")[0]


def check_findable(spec: str) -> None:
    """Refuse, before any data is read, an encoder whose module Python cannot find (only its parent
    packages are imported to look, as any import of it would)."""
    resolved = resolve_spec(spec)
    name = module_of(resolved)
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError) as err:  # a parent package that is missing or fails
        found, reason = None, cause(err)
    else:
        reason = f"no module named {name!r}"
    if found is None:
        raise ValueError(
            f"backbone.encoder={spec}: cannot import {name} ({reason}); install the package "
            "that provides it, or put its folder on PYTHONPATH"
        )


def check_weights_file(weights: str) -> None:
    """`backbone.encoder_weights` must be an existing .safetensors file (weights are never unpickled)."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise ValueError(
            f"backbone.encoder_weights={weights}: no such file; convert the published weights first "
            "(a packaged encoder's recipe gives the command, e.g. python -m finetune.encoders.muq convert)"
        )
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(
            f"backbone.encoder_weights={weights}: not a .safetensors file (only safetensors weights "
            "are read: no pickles)"
        )
