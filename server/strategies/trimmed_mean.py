"""Coordinate-wise trimmed mean, per key over the sites that sent it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from client.messages import NUM_EXAMPLES
from server.strategies.aggregation import Update, aggregate_per_key
from server.strategies.base import ModalityAwareStrategy
from server.strategies.registry import STRATEGIES

__all__ = ["ModalityAwareTrimmedMean", "aggregate_trimmed_mean", "trimmed_mean"]


def _check_trim_fraction(trim_fraction: float) -> None:
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(
            f"trim_fraction must be in [0, 0.5) (the share cut from each side), got {trim_fraction}; "
            "0.5 or more would trim every value"
        )


def trimmed_mean(stacked: np.ndarray, *, trim_fraction: float) -> np.ndarray:
    """Mean over axis 0 after dropping the ``floor(trim_fraction * n)`` smallest and largest
    values of each coordinate (``stacked`` is ``[n, *shape]``)."""
    _check_trim_fraction(trim_fraction)
    n = stacked.shape[0]
    cut = int(np.floor(trim_fraction * n))
    return np.sort(stacked, axis=0)[cut : n - cut].mean(axis=0)


def aggregate_trimmed_mean(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    trim_fraction: float,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """The coordinate-wise trimmed mean of each key over the sites that sent it (unweighted).

    Each side loses ``floor(trim_fraction * n)`` values, ``n`` being the sites that sent
    that key, so a key few sites sent may be trimmed less (or not at all). Keys nobody sent
    keep their global value; integer buffers take the FedAvg rule's value.

    Args:
        global_arrays: the global arrays before this round.
        updates: one (arrays, metrics) pair per site that replied.
        trim_fraction: the share of values cut from each side, in [0, 0.5).
        weighted_by_key: decides who sent a module (a weight of 0 means "did not train it").

    Raises:
        ValueError: ``trim_fraction`` outside [0, 0.5).

    References:
        Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
        Rates", ICML, https://arxiv.org/abs/1803.01498
    """
    _check_trim_fraction(trim_fraction)

    def rule(stacked: np.ndarray) -> np.ndarray:
        return trimmed_mean(stacked, trim_fraction=trim_fraction)

    return aggregate_per_key(global_arrays, updates, rule, weighted_by_key=weighted_by_key)


@STRATEGIES.register("trimmed_mean")
class ModalityAwareTrimmedMean(ModalityAwareStrategy):
    """Modality-aware coordinate-wise trimmed mean (:func:`aggregate_trimmed_mean`).

    Args:
        trim_fraction: the share of values cut from each side, in [0, 0.5).
        **kwargs: passed to :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
        Rates", ICML, https://arxiv.org/abs/1803.01498
    """

    hyperparameters = ("trim_fraction",)

    def __init__(self, *, trim_fraction: float = 0.25, **kwargs: Any) -> None:
        _check_trim_fraction(trim_fraction)
        super().__init__(**kwargs)
        self.trim_fraction = trim_fraction

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        return aggregate_trimmed_mean(
            global_arrays, updates, trim_fraction=self.trim_fraction, weighted_by_key=self.weighted_by_key
        )
