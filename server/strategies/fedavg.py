"""Modality-aware FedAvg (and FedProx, which aggregates the same way)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.strategies.aggregation import Update, aggregate_modules
from server.strategies.base import ModalityAwareStrategy
from server.strategies.registry import STRATEGIES

__all__ = ["ModalityAwareFedAvg"]


@STRATEGIES.register("fedavg")
@STRATEGIES.register("fedprox")  # FedProx aggregates like FedAvg; its proximal term runs at the sites
class ModalityAwareFedAvg(ModalityAwareStrategy):
    """FedAvg whose weights are per module: ``num-examples.<module>`` in each reply's metrics.

    See :func:`~server.strategies.aggregation.aggregate_modules`; the arguments are those of
    :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", https://arxiv.org/abs/1602.05629
        Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (FedProx),
        https://arxiv.org/abs/1812.06127
    """

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        return aggregate_modules(global_arrays, updates, weighted_by_key=self.weighted_by_key)
