"""Server optimisers (Reddi et al. 2021): the averaged update is a pseudo-gradient that a
server-side optimiser applies to the global model, with state kept per key.

A key that no site sent this round is absent from the average: it gets no step, and its
global value and optimiser state stay as they were (a site without images must not move,
or decay the moments of, the image encoder).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from server.strategies.aggregation import Update, average_sent
from server.strategies.base import ModalityAwareStrategy

__all__ = ["Moments", "ServerOptimiserStrategy", "fedopt_step", "pseudo_gradient", "step_sent_keys"]


class Moments(NamedTuple):
    """First and second moment of one key's pseudo-gradients (float64, the key's shape)."""

    m: np.ndarray
    v: np.ndarray


def pseudo_gradient(current: np.ndarray, averaged: np.ndarray) -> np.ndarray:
    """(weighted average of the sent values) - (previous global), in float64.

    References:
        Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
        https://arxiv.org/abs/2003.00295 (Algorithm 2, Delta_t)
    """
    return averaged.astype(np.float64) - current.astype(np.float64)


def fedopt_step(
    global_arrays: Mapping[str, np.ndarray],
    averaged: Mapping[str, np.ndarray],
    state: Mapping[str, Moments],
    *,
    second_moment: Callable[[np.ndarray, np.ndarray], np.ndarray],
    server_lr: float,
    beta_1: float,
    tau: float,
) -> tuple[dict[str, np.ndarray], dict[str, Moments]]:
    """One step of Reddi et al.'s FedOpt on every floating key of ``averaged``.

    ``m = beta_1 m + (1 - beta_1) delta``, ``v = second_moment(v, delta**2)``,
    ``x = x + server_lr m / (sqrt(v) + tau)``, with ``m`` starting at 0 and ``v`` at
    ``tau**2`` (the paper's ``v_{-1} >= tau^2``) and no bias correction, as in the paper.
    Integer buffers in ``averaged`` are copied (the FedAvg rule's value); keys absent from
    ``averaged`` keep their global value and their state.

    Args:
        global_arrays: the global arrays before this round.
        averaged: the per-module weighted average of each key some site sent this round.
        state: moments per key from earlier rounds (not modified; a new dict is returned).
        second_moment: ``(v_prev, delta**2) -> v``, the rule that tells Adam, Yogi and Adagrad apart.
        server_lr: the server learning rate (eta).
        beta_1: decay of the first moment, in [0, 1).
        tau: adaptivity (the denominator's floor), > 0.

    Returns:
        The new global arrays and the new per-key state.

    References:
        Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
        https://arxiv.org/abs/2003.00295 (Algorithm 2)
    """
    def update(delta: np.ndarray, previous: Moments | None) -> tuple[np.ndarray, Moments]:
        previous = previous or Moments(np.zeros_like(delta), np.full_like(delta, tau**2))
        m = beta_1 * previous.m + (1.0 - beta_1) * delta
        v = second_moment(previous.v, delta**2)
        return server_lr * m / (np.sqrt(v) + tau), Moments(m, v)

    return step_sent_keys(global_arrays, averaged, state, update)


def step_sent_keys(
    global_arrays: Mapping[str, np.ndarray],
    averaged: Mapping[str, np.ndarray],
    state: Mapping[str, Any],
    update: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Apply ``update(delta, previous_state) -> (step, new_state)`` to every floating key of ``averaged``.

    ``delta`` is the key's pseudo-gradient (float64) and ``previous_state`` its state or None;
    the key moves to ``global + step`` in its own dtype. Integer buffers are copied from
    ``averaged`` (the FedAvg rule's value); keys absent from ``averaged`` keep their global
    value and their state. ``state`` is not modified; new dicts are returned.
    """
    merged = dict(global_arrays)
    new_state = dict(state)
    for key, average in averaged.items():
        current = global_arrays[key]
        if not np.issubdtype(current.dtype, np.floating):
            merged[key] = average
            continue
        step, new_state[key] = update(pseudo_gradient(current, average), state.get(key))
        merged[key] = np.asarray(current.astype(np.float64) + step, dtype=current.dtype)
    return merged, new_state


class ServerOptimiserStrategy(ModalityAwareStrategy):
    """A strategy that averages per module, then lets a server optimiser step each sent key.

    ``self.state`` holds the optimiser's per-key state across rounds; subclasses implement
    :meth:`step` as a call of their pure step function.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state: dict[str, Any] = {}

    @abstractmethod
    def step(
        self, global_arrays: Mapping[str, np.ndarray], averaged: Mapping[str, np.ndarray], state: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Apply the optimiser to the keys of ``averaged``; return new arrays and state."""

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        averaged = average_sent(global_arrays, updates, weighted_by_key=self.weighted_by_key)
        merged, self.state = self.step(global_arrays, averaged, self.state)
        return merged
