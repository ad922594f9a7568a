"""Stage the Flower app's own files in a folder of their own before ``flwr run`` bundles them.

``flwr run DIR`` walks and resolves every file under DIR before it applies ``fab-include``
(flwr 1.42, ``flwr.cli.utils.collect_files``). From the project root that is the whole
``.venv`` (about 57,000 files, 2.5 s on 2 cores) for the ~150 files the bundle keeps. A
staged copy of just ``pyproject.toml`` and the ``fab-include`` files makes the same bundle.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tomllib

__all__ = ["stage_app", "bundle_files"]

_CONFIG = "pyproject.toml"


def bundle_files(app_dir: Path) -> list[Path]:
    """The files of ``app_dir`` that ``[tool.flwr.app].fab-include`` names, relative to it.

    Raises:
        ValueError: ``pyproject.toml`` has no ``fab-include`` list, or a pattern matches no file.
    """
    config_path = app_dir / _CONFIG
    app = tomllib.loads(config_path.read_text()).get("tool", {}).get("flwr", {}).get("app", {})
    patterns = app.get("fab-include")
    if not isinstance(patterns, list) or not patterns:
        raise ValueError(f"{config_path}: [tool.flwr.app] needs a non-empty 'fab-include' list to stage the app")
    found: set[Path] = set()
    for pattern in patterns:
        matches = {p.relative_to(app_dir) for p in app_dir.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}
        if not matches:
            raise ValueError(f"{config_path}: fab-include pattern {pattern!r} matches no file under {app_dir}")
        found |= matches
    return sorted(found)


def stage_app(app_dir: Path, destination: Path) -> Path:
    """Copy ``pyproject.toml`` and the ``fab-include`` files of ``app_dir`` into ``destination``
    (created; must not exist yet) and return it: the folder to pass to ``flwr run``."""
    destination.mkdir(parents=True)
    shutil.copy2(app_dir / _CONFIG, destination / _CONFIG)
    for relative in bundle_files(app_dir):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(app_dir / relative, target)
    return destination
