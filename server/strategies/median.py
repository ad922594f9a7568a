"""Coordinate-wise median, per key over the sites that sent it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np

from client.messages import NUM_EXAMPLES
from server.strategies.aggregation import Update, aggregate_per_key
from server.strategies.base import ModalityAwareStrategy
from server.strategies.registry import STRATEGIES

__all__ = ["ModalityAwareMedian", "aggregate_median"]


def aggregate_median(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """The coordinate-wise median of each key over the sites that sent it (unweighted).

    Keys nobody sent keep their global value; integer buffers take the FedAvg rule's value.
    With two senders the median is their mean.

    Args:
        global_arrays: the global arrays before this round.
        updates: one (arrays, metrics) pair per site that replied.
        weighted_by_key: decides who sent a module (a weight of 0 means "did not train it").

    References:
        Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
        Rates", ICML, https://arxiv.org/abs/1803.01498
    """
    return aggregate_per_key(global_arrays, updates, partial(np.median, axis=0), weighted_by_key=weighted_by_key)


@STRATEGIES.register("median")
class ModalityAwareMedian(ModalityAwareStrategy):
    """Modality-aware coordinate-wise median (:func:`aggregate_median`).

    References:
        Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
        Rates", ICML, https://arxiv.org/abs/1803.01498
    """

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        return aggregate_median(global_arrays, updates, weighted_by_key=self.weighted_by_key)
