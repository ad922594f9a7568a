"""A composed config checked against the YAML it came from: every value a user overrode must
have the kind the YAML gives that key (``rounds=abc`` is refused, naming ``rounds``), and a key
appended with ``+`` must exist, so that a typo stops the run before anything starts.

Pure functions over plain dicts; :mod:`server.default_config` and ``fedfusion simulate``
compose the two configs (with and without the value overrides) and call them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["group_overrides", "value_problems", "NULLABLE"]

#: Keys whose YAML default is null but whose value, when given, has a fixed kind.
NULLABLE: dict[str, tuple[type, ...]] = {"max_samples": (int,)}

_KINDS = {bool: "true or false", int: "an integer", float: "a number", list: "a list, e.g. [a, b]",
          dict: "a mapping, e.g. {k: v}"}  # fmt: skip


def group_overrides(overrides: list[str], config_dir: Path) -> list[str]:
    """The overrides that choose an option of a config group (``data=tcga_brca``,
    ``encoder/image=resnet``), leaving out those that set a value (``rounds=3``)."""
    chosen = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" in override and (config_dir / key.replace(".", "/")).is_dir():
            chosen.append(override)
    return chosen


def _kind_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return value is None or isinstance(value, (str, int, float, bool))  # a string key takes any scalar


def _expected(default: Any) -> str:
    for kind in (bool, int, float, list, dict):
        if isinstance(default, kind):
            return _KINDS[kind]
    return "a string"


def _free_form(path: str) -> bool:
    """Sections whose keys go to a loader as keyword arguments (``data.params``): a key the
    YAML lacks may be appended there (``+data.params.series_root=...``)."""
    return any(part.endswith("params") for part in path.split("."))


_SELECT = re.compile(r"^\$\{oc\.select:[^,}]+,(?P<fallback>.*)\}$")


def _fallback(default: Any) -> Any:
    """The kind-bearing default of ``${oc.select:key,fallback}`` (``train.lr``, whose default
    a privacy or data option may set): its fallback, itself perhaps such a select
    (``train.batch_size``: privacy's, else the data set's, else 64), read as YAML; any other
    value as is."""
    match = _SELECT.match(default) if isinstance(default, str) else None
    if not match:
        return default
    fallback = match["fallback"].strip()
    return _fallback(fallback) if _SELECT.match(fallback) else yaml.safe_load(fallback)


def value_problems(resolved: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """Every value of ``resolved`` whose kind differs from ``defaults`` (the same config
    without value overrides), and every key ``defaults`` lacks, as ``key: expected ..., got ...``.

    Args:
        resolved: the composed, resolved config the run would use.
        defaults: the composed, resolved config with the same group options and no value overrides.
        prefix: the dotted path of these dicts (for the messages).

    Returns:
        One line per problem, naming the dotted key, the kind expected and the YAML default.
    """
    problems = []
    for key, value in resolved.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            if not _free_form(prefix.rstrip(".")):
                known = ", ".join(sorted(str(k) for k in defaults)) or "none"
                problems.append(f"{path}: no such key (keys here: {known})")
            continue
        default = _fallback(defaults[key])
        if default is None:
            kinds = NULLABLE.get(path)
            if kinds and value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                problems.append(f"{path}: expected {_KINDS[kinds[0]]} or null, got {value!r}")
            continue
        if not _kind_ok(value, default):
            problems.append(f"{path}: expected {_expected(default)} (the default is {default!r}), got {value!r}")
        elif isinstance(value, dict):
            problems.extend(value_problems(value, default, prefix=f"{path}."))
    return problems
