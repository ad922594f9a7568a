"""Centralised (pooled) and local-only training, simulation-only comparisons.

Both train through :func:`client.round.train_round`, the function every site runs each
round, with the federation's settings: the same number of rounds, each of
``settings.epochs`` passes with a fresh AdamW, so the comparison isolates federation.
The steps actually made are returned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from client.data import SiteDataset
from client.round import round_seed, train_round
from client.settings import TrainSettings
from client.train import evaluate
from fusion_models.model import ModelSpec, MultimodalModel, build_model
from fusion_models.task import Task

__all__ = ["train_pooled", "train_local_only", "concat_sites", "RoundCallback"]

# (round, site, metrics on that site's validation split)
RoundCallback = Callable[[int, str, dict[str, float]], None]
POOLED = "pooled"


def concat_sites(datasets: list[SiteDataset]) -> SiteDataset:
    """All sites' rows as one dataset (the pooled baseline's "site"); ids become ``site/id``."""
    if not datasets:
        raise ValueError("concat_sites needs at least one dataset")
    modalities = datasets[0].modalities
    return SiteDataset(
        inputs={m: torch.cat([d.inputs[m] for d in datasets]) for m in modalities},
        present=torch.cat([d.present for d in datasets]),
        target=torch.cat([d.target for d in datasets]),
        sample_ids=[f"{i}/{s}" for i, d in enumerate(datasets) for s in d.sample_ids],
        modalities=list(modalities),
    )


def _train_rounds(
    model: MultimodalModel,
    name: str,
    train_set: SiteDataset,
    val_sets: dict[str, SiteDataset],
    task: Task,
    settings: TrainSettings,
    *,
    rounds: int,
    seed: int,
    device: torch.device,
    on_round: RoundCallback | None,
) -> tuple[MultimodalModel, int]:
    """``rounds`` rounds of :func:`train_round`, validating after each; returns the model and its steps."""
    steps = 0
    for server_round in range(1, rounds + 1):
        result = train_round(model, train_set, task, settings, seed=round_seed(seed, server_round, name), device=device)
        steps += result.steps
        if on_round is not None:
            for site, dataset in val_sets.items():
                on_round(server_round, site, evaluate(model, dataset, task, device=device))
    return model, steps


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
) -> tuple[MultimodalModel, int]:
    """One model on all sites' training rows together; returns it and the steps it took."""
    pooled = concat_sites(list(train_sets.values()))
    return _train_rounds(build_model(spec, seed=seed), POOLED, pooled, val_sets, task, settings,
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
) -> dict[str, tuple[MultimodalModel, int]]:
    """One model per site on that site's rows alone; per site the model and its steps."""
    return {
        site: _train_rounds(build_model(spec, seed=seed), site, dataset, {site: val_sets[site]}, task, settings,
                            rounds=rounds, seed=seed, device=device, on_round=on_round)  # fmt: skip
        for site, dataset in train_sets.items()
    }
