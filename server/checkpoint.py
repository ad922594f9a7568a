"""Save and load the global model state atomically: a crash never leaves half a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from client.atomic_io import atomic_open

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_KEYS"]

CHECKPOINT_KEYS = ("state_dict", "round", "model_spec", "feature_spec", "settings", "format_version")
_FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    *,
    state_dict: dict[str, torch.Tensor],
    round: int,
    model_spec: dict[str, Any],
    feature_spec: str,
    settings: dict[str, Any],
) -> Path:
    """Write a self-describing checkpoint (weights, round, model and feature specs, resolved
    settings) to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "round": round,
        "model_spec": model_spec,
        "feature_spec": feature_spec,
        "settings": settings,
        "format_version": _FORMAT_VERSION,
    }
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; names the file and any missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in CHECKPOINT_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {path} is missing {missing}; was it written by fedfusion?")
    if payload["format_version"] != _FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format {payload['format_version']}, expected {_FORMAT_VERSION}")
    return payload
