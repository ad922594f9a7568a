"""What a site sends back after local training: the modules it trained and how many of its
samples trained each (the server's per-module weights). Shared by the ClientApp and every
in-process federation (benchmarks), so both send exactly the same thing."""

from __future__ import annotations

import hashlib

import torch

from client.data import SiteDataset
from client.messages import NUM_EXAMPLES, module_weight_key
from fusion_models.model import MultimodalModel, module_of

__all__ = ["site_update", "round_seed"]


def site_update(model: MultimodalModel, dataset: SiteDataset) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """State of the modules this site trained, and the per-module sample counts.

    A site sends an encoder only when some of its samples carry that modality and the head
    uses it; the fusion head always. Counts are keyed ``num-examples[.<module>]``.
    """
    counts = dataset.presence_counts()
    used = model.used_modalities
    trained = {f"encoders.{m}" for m, n in counts.items() if n > 0 and m in used} | {"fusion"}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if module_of(k) in trained}
    metrics = {NUM_EXAMPLES: len(dataset), module_weight_key("fusion"): len(dataset)}
    metrics.update({module_weight_key(f"encoders.{m}"): n for m, n in counts.items()})
    return state, metrics


def round_seed(base: int, server_round: int, site: str) -> int:
    """The seed of one site's local training in one round, stable across processes."""
    digest = hashlib.sha256(f"{base}|{server_round}|{site}".encode()).hexdigest()
    return int(digest[:8], 16)
