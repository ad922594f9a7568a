"""FedYogi: Yogi on the server, per key over the sites that sent it."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from server.strategies.fedadam import ModalityAwareFedAdam
from server.strategies.registry import STRATEGIES
from server.strategies.server_optimiser import Moments, fedopt_step

__all__ = ["ModalityAwareFedYogi", "fedyogi_step", "yogi_second_moment"]


def yogi_second_moment(v: np.ndarray, delta_sq: np.ndarray, *, beta_2: float) -> np.ndarray:
    """``v = v - (1 - beta_2) delta**2 sign(v - delta**2)``: moves ``v`` towards ``delta**2``
    by a step that does not scale with ``v``, so it grows more slowly than Adam's.

    References:
        Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
        https://arxiv.org/abs/2003.00295 (Algorithm 2, FedYogi);
        Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS
    """
    return v - (1.0 - beta_2) * delta_sq * np.sign(v - delta_sq)


def fedyogi_step(
    global_arrays: Mapping[str, np.ndarray],
    averaged: Mapping[str, np.ndarray],
    state: Mapping[str, Moments],
    *,
    server_lr: float,
    beta_1: float,
    beta_2: float,
    tau: float,
) -> tuple[dict[str, np.ndarray], dict[str, Moments]]:
    """One FedYogi step on the keys of ``averaged``; see :func:`~server.strategies.server_optimiser.fedopt_step`.

    Args:
        global_arrays: the global arrays before this round.
        averaged: the per-module weighted average of each key some site sent this round.
        state: moments per key from earlier rounds (not modified).
        server_lr: the server learning rate (eta).
        beta_1: decay of the first moment, in [0, 1).
        beta_2: the second moment's step, in [0, 1).
        tau: adaptivity, > 0.

    References:
        Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
        https://arxiv.org/abs/2003.00295 (Algorithm 2, FedYogi)
    """
    return fedopt_step(
        global_arrays, averaged, state,
        second_moment=partial(yogi_second_moment, beta_2=beta_2), server_lr=server_lr, beta_1=beta_1, tau=tau,
    )  # fmt: skip


@STRATEGIES.register("fedyogi")
class ModalityAwareFedYogi(ModalityAwareFedAdam):
    """Modality-aware FedYogi (:func:`fedyogi_step`): FedAdam's hyper-parameters and
    defaults, Yogi's second moment.

    Args:
        server_lr: the server learning rate (eta); 0.01 is a starting point to tune.
        beta_1: decay of the first moment, in [0, 1).
        beta_2: the second moment's step, in [0, 1).
        tau: adaptivity, > 0 (Reddi et al. found 1e-3 a robust choice).
        **kwargs: passed to :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        Reddi et al. 2021, "Adaptive Federated Optimization", ICLR,
        https://arxiv.org/abs/2003.00295
    """

    def step(
        self, global_arrays: Mapping[str, np.ndarray], averaged: Mapping[str, np.ndarray], state: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return fedyogi_step(
            global_arrays, averaged, state, server_lr=self.server_lr, beta_1=self.beta_1, beta_2=self.beta_2, tau=self.tau
        )
