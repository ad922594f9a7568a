"""FedAvgM: FedAvg with server momentum, per key over the sites that sent it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from server.strategies.registry import STRATEGIES
from server.strategies.server_optimiser import ServerOptimiserStrategy, step_sent_keys

__all__ = ["ModalityAwareFedAvgM", "fedavgm_step"]

DEFAULT_SERVER_LR = 1.0


def fedavgm_step(
    global_arrays: Mapping[str, np.ndarray],
    averaged: Mapping[str, np.ndarray],
    state: Mapping[str, np.ndarray],
    *,
    server_lr: float,
    momentum: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One server-momentum step on every floating key of ``averaged``.

    ``buffer = momentum * buffer + delta``, ``x = x + server_lr * buffer``, with ``delta`` the
    pseudo-gradient (average - global) and the buffer starting at 0. With ``momentum=0`` and
    ``server_lr=1`` this is FedAvg. Integer buffers are copied from ``averaged``; keys absent
    from it keep their global value and their buffer.

    Args:
        global_arrays: the global arrays before this round.
        averaged: the per-module weighted average of each key some site sent this round.
        state: momentum buffer per key (not modified; a new dict is returned).
        server_lr: the server learning rate.
        momentum: the server momentum (beta), in [0, 1).

    Returns:
        The new global arrays and the new per-key momentum buffers.

    References:
        Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for
        Federated Visual Classification", https://arxiv.org/abs/1909.06335
    """
    def update(delta: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        buffer = delta if previous is None else momentum * previous + delta
        return server_lr * buffer, buffer

    return step_sent_keys(global_arrays, averaged, state, update)


@STRATEGIES.register("fedavgm")
class ModalityAwareFedAvgM(ServerOptimiserStrategy):
    """Modality-aware FedAvg with server momentum (:func:`fedavgm_step`).

    Args:
        server_lr: the server learning rate (1.0: the averaged step, as in Hsu et al.).
        momentum: the server momentum, in [0, 1).
        **kwargs: passed to :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for
        Federated Visual Classification", https://arxiv.org/abs/1909.06335
    """

    hyperparameters = ("server_lr", "momentum")

    def __init__(self, *, server_lr: float = DEFAULT_SERVER_LR, momentum: float = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.momentum = momentum

    def step(
        self, global_arrays: Mapping[str, np.ndarray], averaged: Mapping[str, np.ndarray], state: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return fedavgm_step(global_arrays, averaged, state, server_lr=self.server_lr, momentum=self.momentum)
