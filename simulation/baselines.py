"""Centralised (pooled) and local-only training: the same model, optimiser and number of
sample passes as the federation, without Flower, so the comparison isolates federation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import ConcatDataset, Dataset

from client.data import SiteDataset
from client.train import TrainSettings, evaluate, train_local
from fusion_models.model import ModelSpec, MultimodalModel, build_model
from fusion_models.task import Task

__all__ = ["train_pooled", "train_local_only", "RoundCallback"]

# (round, site, metrics on that site's validation split)
RoundCallback = Callable[[int, str, dict[str, float]], None]


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def _train_rounds(
    model: MultimodalModel,
    train_set: Dataset,
    val_sets: dict[str, SiteDataset],
    task: Task,
    settings: TrainSettings,
    *,
    rounds: int,
    seed: int,
    device: torch.device,
    on_round: RoundCallback | None,
) -> MultimodalModel:
    """``rounds`` x ``settings.epochs`` passes with one optimiser, validating after each round."""
    optimizer = _optimizer(model, settings)
    for server_round in range(1, rounds + 1):
        train_local(model, train_set, task, settings, seed=seed + server_round, device=device, optimizer=optimizer)
        if on_round is not None:
            for site, dataset in val_sets.items():
                on_round(server_round, site, evaluate(model, dataset, task, device=device))
    return model


def train_pooled(
    train_sets: dict[str, SiteDataset],
    val_sets: dict[str, SiteDataset],
    spec: ModelSpec,
    task: Task,
    settings: TrainSettings,
    *,
    rounds: int,
    seed: int,
    device: torch.device,
    on_round: RoundCallback | None = None,
) -> MultimodalModel:
    """Train one model on all sites' training rows together, ``rounds`` x ``settings.epochs``
    passes, evaluating each site's validation split after every round-equivalent."""
    pooled = ConcatDataset(list(train_sets.values()))
    return _train_rounds(build_model(spec, seed=seed), pooled, val_sets, task, settings,
                         rounds=rounds, seed=seed, device=device, on_round=on_round)  # fmt: skip


def train_local_only(
    train_sets: dict[str, SiteDataset],
    val_sets: dict[str, SiteDataset],
    spec: ModelSpec,
    task: Task,
    settings: TrainSettings,
    *,
    rounds: int,
    seed: int,
    device: torch.device,
    on_round: RoundCallback | None = None,
) -> dict[str, MultimodalModel]:
    """Train one model per site on that site's rows alone, with the federation's budget."""
    return {
        site: _train_rounds(build_model(spec, seed=seed), dataset, {site: val_sets[site]}, task, settings,
                            rounds=rounds, seed=seed, device=device, on_round=on_round)  # fmt: skip
        for site, dataset in train_sets.items()
    }
