"""Keep the best snapshot of a model by its headline figure on validation splits.

``personalization.select=best_val``: a site's fine-tuning is scored on its validation split
after every pass (and before the first: the global model is a candidate), and the local-only
and pooled baselines after every round (the server's rounds: :mod:`server.round_selection`),
so that every method keeps its model by the same rule. The
snapshot with the best mean headline over the given splits (AUROC, c-index; the lowest RMSE)
is kept; a tie keeps the earlier snapshot, and where no snapshot could be scored (no split
with both classes, say) the last one is kept. Training itself is unchanged: only which
weights are kept differs. Only validation rows are read, the split the decision threshold
already comes from; DP-SGD covers the training split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from client.data import SiteDataset
from client.settings import SELECTIONS
from client.train import evaluate
from fusion_models.task import Task

__all__ = ["SELECTIONS", "BestSnapshot", "best_mean", "validation_metrics"]


def best_mean(values: list[float], kept: float | None, *, higher_is_better: bool) -> float | None:
    """The mean of ``values`` if it beats ``kept`` (None: nothing kept yet), else None; a tie
    does not beat, nor does an empty list."""
    if not values:
        return None
    score = sum(values) / len(values)
    if kept is not None and (score <= kept if higher_is_better else score >= kept):
        return None
    return score


def validation_metrics(model: nn.Module, val_sets: Mapping[str, SiteDataset], task: Task, *,
                       device: torch.device) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per split name, the task's metrics of ``model`` on it (and its mean loss)."""
    return {name: evaluate(model, dataset, task, device=device) for name, dataset in val_sets.items()}


class BestSnapshot:
    """The snapshot with the best mean validation headline among those offered."""

    def __init__(self, task: Task) -> None:
        self.headline = task.headline
        self.higher_is_better = task.higher_is_better
        self.score: float | None = None  # the kept snapshot's mean headline
        self.index: int | None = None  # the ``index`` it was offered with
        self._state: dict[str, torch.Tensor] | None = None

    def offer(self, model: nn.Module, metrics: Mapping[str, Mapping[str, float]], index: int) -> bool:
        """Keep a copy of ``model``'s weights if their mean headline over ``metrics`` (one
        entry per validation split; splits without a finite figure are left out) beats the
        kept one's; returns whether it did."""
        values = [float(m[self.headline]) for m in metrics.values() if math.isfinite(float(m.get(self.headline, math.nan)))]
        score = best_mean(values, self.score, higher_is_better=self.higher_is_better)
        if score is None:
            return False
        self.score, self.index = score, index
        self._state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return True

    def restore(self, model: nn.Module) -> int | None:
        """Load the kept weights into ``model``; returns their index, or None (``model`` left
        as it is) when no snapshot could be scored."""
        if self._state is None:
            return None
        model.load_state_dict(self._state)
        return self.index
