"""Centralised (pooled) and local-only training, simulation-only comparisons.

Both train through :func:`client.round.train_round`, the function every site runs each
round, with the federation's settings: the same number of rounds, each of
``settings.epochs`` passes with a fresh AdamW, so the comparison isolates federation.
The steps actually made are returned. With ``select="best_val"`` each keeps the round whose
weights score best on its validation splits (pooled: the mean over the sites), the rule
``personalization.select`` sets for the sites' fine-tuning (:mod:`client.model_selection`).
Under ``privacy=dp`` they train through the same DP round, each with a ledger of its own
under ``ledger_dir`` (``pooled/`` or one per site), and stop at the budget as a site does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from client.data import SiteDataset
from client.ledger import PrivacyLedger
from client.model_selection import BestSnapshot, validation_metrics
from client.privacy import BudgetExceeded, SitePrivacy
from client.round import round_seed, train_round
from client.settings import PrivacySettings, TrainSettings
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
    privacy: PrivacySettings | None = None,
    ledger_dir: Path | None = None,
    select: str = "last",
) -> tuple[MultimodalModel, int]:
    """``rounds`` rounds of :func:`train_round`, validating after each; returns the model
    (under ``select="best_val"`` the best round's) and the steps made."""
    steps = 0
    private = privacy is not None and privacy.enabled
    if private and ledger_dir is None:
        raise ValueError("a DP baseline needs a ledger_dir")
    ledger = PrivacyLedger.open(ledger_dir, name) if private else None
    best = BestSnapshot(task) if select == "best_val" else None
    for server_round in range(1, rounds + 1):
        dp = SitePrivacy(settings=privacy, ledger=ledger, run_id=f"baseline-{name}", server_round=server_round,
                         rounds=rounds) if private else None  # fmt: skip
        try:
            result = train_round(model, train_set, task, settings, seed=round_seed(seed, server_round, name),
                                 device=device, privacy=dp)  # fmt: skip
        except BudgetExceeded:
            break
        steps += result.steps
        if on_round is None and best is None:
            continue
        metrics = validation_metrics(model, val_sets, task, device=device)
        if best is not None:
            best.offer(model, metrics, server_round)
        if on_round is not None:
            for site, values in metrics.items():
                on_round(server_round, site, values)
    if best is not None:
        best.restore(model)
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
    privacy: PrivacySettings | None = None,
    ledger_dir: Path | None = None,
    select: str = "last",
) -> tuple[MultimodalModel, int]:
    """One model on all sites' training rows together; returns it and the steps it took."""
    pooled = concat_sites(list(train_sets.values()))
    return _train_rounds(build_model(spec, seed=seed), POOLED, pooled, val_sets, task, settings,
                         rounds=rounds, seed=seed, device=device, on_round=on_round, privacy=privacy,
                         ledger_dir=ledger_dir, select=select)  # fmt: skip


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
    privacy: PrivacySettings | None = None,
    ledger_dir: Path | None = None,
    select: str = "last",
) -> dict[str, tuple[MultimodalModel, int]]:
    """One model per site on that site's rows alone; per site the model and its steps."""
    return {
        site: _train_rounds(build_model(spec, seed=seed), site, dataset, {site: val_sets[site]}, task, settings,
                            rounds=rounds, seed=seed, device=device, on_round=on_round, privacy=privacy,
                            ledger_dir=ledger_dir, select=select)  # fmt: skip
        for site, dataset in train_sets.items()
    }
