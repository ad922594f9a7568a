"""Krum: per module, take the one site whose update lies closest to its neighbours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from client.messages import NUM_EXAMPLES
from server.strategies.aggregation import Update
from server.strategies.base import ModalityAwareStrategy
from server.strategies.multikrum import aggregate_multikrum
from server.strategies.registry import STRATEGIES

__all__ = ["ModalityAwareKrum", "aggregate_krum"]


def aggregate_krum(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    num_malicious: int,
    weighted_by_key: str = NUM_EXAMPLES,
    server_round: int | None = None,
) -> dict[str, np.ndarray]:
    """Krum per module: Multi-Krum with ``m = 1``; see
    :func:`~server.strategies.multikrum.aggregate_multikrum` for the fallback and its warning.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """
    return aggregate_multikrum(
        global_arrays, updates,
        num_malicious=num_malicious, num_selected=1, weighted_by_key=weighted_by_key, server_round=server_round,
    )  # fmt: skip


@STRATEGIES.register("krum")
class ModalityAwareKrum(ModalityAwareStrategy):
    """Modality-aware Krum (:func:`aggregate_krum`).

    Args:
        num_malicious: f, the number of Byzantine sites to tolerate; a module needs more
            than ``2 f + 2`` senders, else it gets the weighted average.
        **kwargs: passed to :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """

    hyperparameters = ("num_malicious",)

    def __init__(self, *, num_malicious: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_malicious = num_malicious

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        return aggregate_krum(
            global_arrays, updates,
            num_malicious=self.num_malicious, weighted_by_key=self.weighted_by_key, server_round=server_round,
        )  # fmt: skip
