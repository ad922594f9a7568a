"""The defaults of ``configs/config.yaml`` as run settings, for a plain ``flwr run .`` that
reaches the ServerApp without fedfusion's driver: the YAML stays the one source of defaults."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from server.settings import RunSettings

__all__ = ["CONFIG_DIR", "default_run_settings", "compose_config"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str] | None = None) -> dict:
    """``configs/config.yaml`` composed with Hydra ``overrides`` and resolved, as a dict."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if not isinstance(resolved, dict):
        raise ValueError("the config must be a mapping")
    return resolved


def default_run_settings(overrides: list[str] | None = None) -> RunSettings:
    """Run settings of ``configs/config.yaml`` plus Hydra ``overrides``."""
    return RunSettings.from_config(compose_config(overrides))
