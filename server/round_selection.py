"""``personalization.select=best_val`` at the server: the federation's model is the round
whose global weights score best on the sites' validation splits.

After every round the sites score that round's global model on their validation splits and
send the figures (the per-round evaluation, which Flower runs before it hands the round's
arrays to ``evaluate_fn``); the server keeps the round with the best mean, over the sites that
could score it, of their headline (AUROC, c-index; the lowest RMSE). A tie keeps the earlier
round; with no scored round the last one stands. Only figures travel: the server sees no rows.
It is the same rule the sites' fine-tuning and the baselines follow (:mod:`client.model_selection`).
"""

from __future__ import annotations

import math
from collections import defaultdict

from flwr.app import ArrayRecord, MetricRecord

from client.model_selection import best_mean

__all__ = ["BestRound", "SELECTED_ROUND_FILE"]

#: ``federated/<this>``: the round the rule kept, its figure, and the rule.
SELECTED_ROUND_FILE = "selected_round.json"


class BestRound:
    """Tracks the best-scoring round's global arrays from the sites' validation figures."""

    def __init__(self, headline: str, *, higher_is_better: bool) -> None:
        self.key = f"val-{headline}"
        self.higher_is_better = higher_is_better
        self.round: int | None = None
        self.score: float | None = None
        self.arrays: ArrayRecord | None = None
        self._figures: dict[int, list[float]] = defaultdict(list)

    def site_figures(self, server_round: int, kind: str, metrics: MetricRecord) -> None:
        """One site's reply (``on_site_metrics``); validation figures of evaluation rounds count."""
        value = metrics.get(self.key) if kind == "evaluate" else None
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            self._figures[server_round].append(float(value))

    def global_arrays(self, server_round: int, arrays: ArrayRecord) -> bool:
        """The global arrays after ``server_round`` (Flower's ``evaluate_fn``, called once that
        round's site figures are in); keeps them if they score best so far, and says so."""
        score = best_mean(self._figures.pop(server_round, []), self.score, higher_is_better=self.higher_is_better)
        if score is None:
            return False
        self.round, self.score = server_round, score
        self.arrays = ArrayRecord(arrays.to_torch_state_dict())  # a copy: Flower's record is not ours to keep
        return True
