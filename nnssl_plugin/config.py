"""Method configurations: one frozen object per method, defined in its family folder (`methods/<family>/config.py`,
every default with its reason); this module joins them. A variant is a config."""
from __future__ import annotations

from dataclasses import fields, replace


from nnssl_plugin.methods.hier import config as hier
from nnssl_plugin.methods.moco import config as moco
from nnssl_plugin.recipe import Recipe

HierConfig, MocoConfig = hier.HierConfig, moco.MocoConfig
MethodConfig = MocoConfig | HierConfig

METHODS: dict[str, MethodConfig] = {**moco.METHODS, **hier.METHODS}  # each family folder's config lists its methods
RECIPES: dict[str, Recipe] = {"moco": moco.RECIPE, "hier": hier.RECIPE}  # each family's default optimiser recipe


def default_recipe(family: str) -> Recipe:
    """The default recipe of a method family ("moco" or "hier")."""
    if family not in RECIPES:
        raise KeyError(f"no default recipe for method family '{family}'")
    return RECIPES[family]


def method_config(name: str) -> MethodConfig:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


FIXED_FIELDS = ("method", "family")  # what makes the method itself; never an option


def parse_option(config: MethodConfig, key: str, text: str):
    """`text` as a value of `config`'s field `key`, by the field's annotation (int, float, bool, str, a tuple of
    floats written "a,b", `| None`)."""
    kinds = {f.name: str(f.type) for f in fields(config)}
    if key not in kinds or key in FIXED_FIELDS:
        options = sorted(k for k in kinds if k not in FIXED_FIELDS)
        raise ValueError(f"'{key}' is not an option of {config.method}; options: {', '.join(options)}")
    kind = kinds[key]
    if text.lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("tuple[float"):
            return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{key}={text}: expected {kind}") from None
    return text


def with_options(config: MethodConfig, options: dict) -> MethodConfig:
    """`config` with fields replaced by `options` ({field: value}, values already typed; see parse_option)."""
    unknown = sorted(set(options) - {f.name for f in fields(config)} | (set(options) & set(FIXED_FIELDS)))
    if unknown:
        raise ValueError(f"{unknown} are not options of {config.method}")
    return replace(config, **options)
