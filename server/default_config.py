"""The defaults of ``configs/config.yaml`` as run settings, for a plain ``flwr run .`` that
reaches the ServerApp without fedfusion's driver: the YAML stays the one source of defaults.

``flwr run . local --run-config 'overrides="rounds=3 train.epochs=0.5"'`` passes Hydra-style
overrides, checked as ``fedfusion simulate`` checks them (:mod:`server.config_check`).
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from server.config_check import group_overrides, value_problems
from server.settings import RunSettings

__all__ = ["CONFIG_DIR", "default_run_settings", "compose_config", "check_values", "check_composes", "resolve_config",
           "settings_from_run_config"]  # fmt: skip

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    try:
        if GlobalHydra.instance().is_initialized():  # inside `fedfusion simulate` (@hydra.main)
            return compose(config_name="config", overrides=overrides)
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        # Hydra appends its search path to "Could not find ..."; the options it lists are the fix.
        text = str(error).split("\nConfig search path")[0].strip()
        for override in group_overrides(overrides, CONFIG_DIR):
            group, value = override.lstrip("+~").split("=", 1)
            if value.lower() in ("true", "false", "null"):  # Hydra says only "Got bool", naming no key
                options = sorted(p.stem for p in (CONFIG_DIR / group.replace(".", "/")).glob("*.yaml"))
                text = f"{group} is a config group: choose one of {options}, got {value!r}"
        raise ValueError(f"overrides {' '.join(overrides)!r}: {text}") from None


def check_composes(overrides: list[str]) -> None:
    """Raise ``ValueError`` with Hydra's reason (an unknown group option, an unknown key, an
    override it cannot parse) when ``overrides`` do not compose, before ``@hydra.main`` would
    print it with its search path and exit 1."""
    _compose(overrides)


def _option_file(cfg: DictConfig, key: str) -> str:
    """The YAML that declares ``key`` (``configs/data/manifests.yaml`` for ``data.dir``)."""
    group = key.split(".", 1)[0]
    name = OmegaConf.select(cfg, f"{group}.name", default=None, throw_on_missing=False)
    option = CONFIG_DIR / group / f"{name}.yaml"
    return str(option.relative_to(CONFIG_DIR.parent)) if name and option.is_file() else "configs/config.yaml"


def resolve_config(cfg: DictConfig, *, resolve: bool = True) -> dict[str, Any]:
    """``cfg`` resolved to plain containers; a key left at ``???`` is named with its fix."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=resolve)
    except MissingMandatoryValue as error:
        key = error.full_key
        raise ValueError(f"{key}: needs a value and has none; add {key}=<value> to the command "
                         f"(see {_option_file(cfg, key)})") from None  # fmt: skip
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "config"
        raise ValueError(f"{key}: {str(error).splitlines()[0]}") from None
    if not isinstance(resolved, dict):
        raise ValueError("the config must be a mapping")
    return resolved


def check_values(resolved: dict[str, Any], overrides: list[str]) -> None:
    """Raise one error naming every overridden key whose value has the wrong kind, and every
    appended key that does not exist (see :func:`server.config_check.value_problems`)."""
    # Unresolved: the defaults may hold ??? (data.dir) that only the overrides fill in.
    defaults = resolve_config(_compose(group_overrides(overrides, CONFIG_DIR)), resolve=False)
    problems = value_problems(resolved, defaults)
    if problems:
        raise ValueError("; ".join(problems))


def compose_config(overrides: list[str] | None = None) -> dict:
    """``configs/config.yaml`` composed with Hydra ``overrides``, checked and resolved, as a dict."""
    overrides = list(overrides or [])
    resolved = resolve_config(_compose(overrides))
    check_values(resolved, overrides)
    return resolved


def default_run_settings(overrides: list[str] | None = None) -> RunSettings:
    """Run settings of ``configs/config.yaml`` plus Hydra ``overrides``."""
    return RunSettings.from_config(compose_config(overrides))


def settings_from_run_config(run_config: dict[str, Any]) -> RunSettings:
    """The ServerApp's settings from Flower's run config.

    ``config-json`` (what ``fedfusion simulate`` sends) wins. Without it, ``configs/config.yaml``
    plus the Hydra overrides in ``overrides`` (``"rounds=3 train.epochs=0.5"``); ``num_sites``,
    unless overridden, is the number of manifests in ``sites-dir``, so the ServerApp waits for
    exactly the sites there are.
    """
    text = str(run_config.get("config-json", "") or "")
    overrides = shlex.split(str(run_config.get("overrides", "") or ""))
    if text:
        if overrides:
            raise ValueError("run config: give config-json or overrides, not both")
        return RunSettings.from_json(text)
    settings = default_run_settings(overrides)
    sites_dir = str(run_config.get("sites-dir", "") or "")
    if sites_dir and not any(o.lstrip("+~").startswith("num_sites=") for o in overrides):
        manifests = sorted(Path(sites_dir).glob("*.csv"))
        if not manifests:
            raise ValueError(f"run config sites-dir={sites_dir!r}: no manifests (*.csv) there")
        settings = replace(settings, num_sites=len(manifests))
    return settings
