"""Personalisation at a site: a model of its own, derived from the final global model.

``finetune``: local epochs on the site's training split, starting from the global weights
(the lead measured on HAM10000: it beat local-only at most data-rich sites). The rule that
decides where it applies is fixed in the config before results are seen: a site with fewer
than ``min_train_positives`` training positives (binary) or events (survival) keeps the
global model as its personalised model, and its report says so.

The personalised weights are the site's own: they are written, atomically, to the site's
state folder and never sent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from client.atomic_io import atomic_open
from client.data import SiteDataset
from client.round import train_round
from client.settings import PERSONALIZATIONS, PersonalizationSettings, TrainSettings
from fusion_models.model import MultimodalModel
from fusion_models.task import Task

__all__ = ["PERSONALIZATIONS", "PersonalizationSettings", "personalize", "save_personal_model", "load_personal_model"]

_FORMAT_VERSION = 1


def _minority_count(task: Task, target: torch.Tensor) -> int | None:
    if task.name == "binary":
        return int((target.reshape(-1) == 1).sum())
    if task.name == "survival":
        return int(target[:, 1].sum()) if len(target) else 0
    return None


def personalize(
    global_model: MultimodalModel,
    train_set: SiteDataset,
    task: Task,
    train: TrainSettings,
    settings: PersonalizationSettings,
    *,
    seed: int,
    device: torch.device,
) -> tuple[MultimodalModel, int, str]:
    """The site's personalised model, the local steps it took, and a note when the rule kept the global model."""
    if settings.name == "none":
        raise ValueError("personalize() called with personalization.name 'none'")
    model = copy.deepcopy(global_model)
    count = _minority_count(task, train_set.target)
    if count is not None and count < settings.min_train_positives:
        what = "events" if task.name == "survival" else "positives"
        return model, 0, f"kept the global model: {count} training {what} < {settings.min_train_positives}"
    result = train_round(model, train_set, task, TrainSettings(**{**train.__dict__, "epochs": settings.epochs,
                                                                  "proximal_mu": 0.0}),
                         seed=seed, device=device)  # fmt: skip
    return model, result.steps, ""


def save_personal_model(path: Path, model: MultimodalModel, *, meta: dict[str, Any]) -> Path:
    """Write the personalised weights and what made them to ``path`` atomically (fsync, rename)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save({"state_dict": state, "meta": meta, "format_version": _FORMAT_VERSION}, f)
    return Path(path)


def load_personal_model(path: Path) -> dict[str, Any]:
    """Read what :func:`save_personal_model` wrote; refuses another format, naming the file."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or data.get("format_version") != _FORMAT_VERSION or "state_dict" not in data:
        raise ValueError(f"{path}: not a fedfusion personal model (format {_FORMAT_VERSION} expected)")
    return data
