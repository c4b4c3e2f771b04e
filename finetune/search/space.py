"""A search space: dotted recipe keys -> Optuna distributions, read from YAML and checked against the
recipe before any trial (`finetune.search`).

`{low, high[, step][, log]}` is a numeric range (ints when low, high and step are ints), `{choices:
[...]}` a categorical one (numbers, strings, booleans, null). Every choice and both ends of every
range are loaded into the recipe and checked (`finetune.checks.check_recipe`): one generic path, no
per-key tables.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from finetune import recipe as recipes
from finetune.checks import check_recipe

SPACE_FIELDS = ("low", "high", "step", "log", "choices")


class SearchError(recipes.RecipeError):
    """A search that cannot start as asked (its space, its folder, its study): the message says why."""


def numeric(where: str, spec: dict) -> BaseDistribution:
    """{low, high[, step][, log]}: ints when low, high and step are ints, else floats."""
    missing = [name for name in ("low", "high") if name not in spec]
    if missing:
        raise SearchError(f"{where}: give low and high (or choices); {' and '.join(missing)} missing")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise SearchError(f"{where}: low, high and step must be numbers, not {numbers}")
    if not isinstance(log, bool):
        raise SearchError(f"{where}: log must be true or false, not {log!r}")
    if low >= high:
        raise SearchError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SearchError(f"{where}: a log range needs low > 0, not {low}")
    if step is not None and (step <= 0 or log):
        raise SearchError(f"{where}: step must be positive, and a log range takes none (step {step})")
    if all(isinstance(v, int) for v in numbers):
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def categorical(where: str, spec: dict) -> CategoricalDistribution:
    """{choices: [...]} of numbers, strings, booleans or null (optuna's categorical values)."""
    choices = spec["choices"]
    if len(spec) > 1:
        raise SearchError(f"{where}: choices go alone, without {', '.join(k for k in spec if k != 'choices')}")
    if not isinstance(choices, list) or not choices:
        raise SearchError(f"{where}: choices must be a non-empty list, not {choices!r}")
    odd = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
    if odd:
        raise SearchError(f"{where}: choice {odd[0]!r} is not a number, string, boolean or null")
    return CategoricalDistribution(choices)


def distribution(where: str, spec) -> BaseDistribution:
    if not isinstance(spec, dict):
        raise SearchError(f"{where}: expected {{low, high[, step][, log]}} or {{choices: [...]}}, not {spec!r}")
    unknown = [name for name in spec if name not in SPACE_FIELDS]
    if unknown:
        raise SearchError(f"{where}: unknown field {unknown[0]!r}; valid: {recipes.listed(SPACE_FIELDS)}")
    return categorical(where, spec) if "choices" in spec else numeric(where, spec)


def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    """The space file: dotted recipe key -> distribution."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SearchError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict) or not values:
        raise SearchError(
            f"{path}: expected a mapping of dotted recipe keys to distributions, e.g. "
            "train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}"
        )
    return {str(key): distribution(f"{path}: {key}", spec) for key, spec in values.items()}


def setting(key: str, value) -> str:
    """`key=value` that the recipe loader reads back as `value`."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).removesuffix('...' + chr(10)).strip()}"


def settings(params: dict) -> list[str]:
    return [setting(key, value) for key, value in params.items()]


def probe_values(dist: BaseDistribution) -> list:
    """The values that stand for a distribution when it is checked: each choice, or both ends."""
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]


def check_space(
    recipe: str, overrides: list[str], space: dict[str, BaseDistribution], reserved: tuple[str, ...], where: Path
) -> None:
    """Refuse, before any trial, a key that the search sets or the overrides set too, and a value the
    recipe refuses: the recipe is loaded and checked with each choice and each range end."""
    given = {text.split("=", 1)[0] for text in overrides}
    for key, dist in space.items():
        if key in reserved:
            raise SearchError(f"{where}: {key}: the search sets {', '.join(reserved)} itself")
        if key in given:
            raise SearchError(f"{where}: {key} is set on the command line too; search it or set it, not both")
        for value in probe_values(dist):
            try:
                check_recipe(recipes.load(recipe, [*overrides, setting(key, value)]))
            except recipes.RecipeError as err:
                raise SearchError(f"{where}: {key}={value!r} is refused: {err}") from None


def described(dist: BaseDistribution) -> str:
    """A distribution in words: `one of a, b` or `float 1e-05 to 0.01, log`."""
    if isinstance(dist, CategoricalDistribution):
        return f"one of {recipes.listed(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    step = f", step {dist.step:g}" if dist.step not in (None, 1) else ""
    return f"{kind} {dist.low:g} to {dist.high:g}{', log' if dist.log else ''}{step}"
