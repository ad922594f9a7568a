"""Multi-Krum: per module, average the sites whose updates lie closest to their neighbours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from logging import WARNING
from typing import Any

import numpy as np
from flwr.common.logger import log

from client.messages import NUM_EXAMPLES
from server.strategies.aggregation import Update, aggregate_modules, keys_by_module, sent_by_key
from server.strategies.base import ModalityAwareStrategy
from server.strategies.registry import STRATEGIES

__all__ = ["ModalityAwareMultiKrum", "aggregate_multikrum", "krum_scores", "multikrum_select", "squared_distances"]


def squared_distances(sites: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """``[n, n]`` squared Euclidean distances between sites, each given as the same list of
    arrays (one per key of a module); no concatenated copy of the module is made."""
    n = len(sites)
    distances = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d = sum(float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2)) for a, b in zip(sites[i], sites[j]))
            distances[i, j] = distances[j, i] = d
    return distances


def krum_scores(distances: np.ndarray, *, num_malicious: int) -> np.ndarray:
    """Each site's Krum score: the sum of its squared distances to its ``n - f - 2`` nearest
    other sites.

    Raises:
        ValueError: ``n <= 2 f + 2``, where Krum gives no guarantee.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """
    n = distances.shape[0]
    if n <= 2 * num_malicious + 2:
        raise ValueError(f"Krum needs more than 2 * num_malicious + 2 = {2 * num_malicious + 2} sites, got {n}")
    neighbours = n - num_malicious - 2
    others = [np.delete(distances[i], i) for i in range(n)]
    return np.asarray([np.sort(row)[:neighbours].sum() for row in others])


def multikrum_select(distances: np.ndarray, *, num_malicious: int, num_selected: int) -> list[int]:
    """The ``num_selected`` sites with the lowest Krum scores (ties: the lower index), sorted.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """
    scores = krum_scores(distances, num_malicious=num_malicious)
    return sorted(int(i) for i in np.argsort(scores, kind="stable")[:num_selected])


def aggregate_multikrum(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    num_malicious: int,
    num_selected: int,
    weighted_by_key: str = NUM_EXAMPLES,
    server_round: int | None = None,
) -> dict[str, np.ndarray]:
    """Multi-Krum per module: score the sites that sent the module by distances over that
    module's floating keys, and average (unweighted, as in the paper) the ``m`` best.

    ``m = num_selected``, or ``n - f`` when ``num_selected`` is 0; an ``m`` above ``n - f``
    is lowered to it (with a warning). A module fewer than ``2 f + 3`` sites sent falls back
    to the weighted average, with a warning naming the round and the module. A site that
    sent only part of a module's keys takes no part in that module's selection. Keys nobody
    sent keep their global value; integer buffers take the FedAvg rule's value.

    Args:
        global_arrays: the global arrays before this round.
        updates: one (arrays, metrics) pair per site that replied.
        num_malicious: f, the number of Byzantine sites to tolerate (>= 0).
        num_selected: m, the number of sites to average (0: n - f).
        weighted_by_key: decides who sent a module, and weights the fallback average.
        server_round: names the round in warnings.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """
    if num_malicious < 0 or num_selected < 0:
        raise ValueError(f"num_malicious and num_selected must be >= 0, got {num_malicious} and {num_selected}")
    merged = aggregate_modules(global_arrays, updates, weighted_by_key=weighted_by_key)
    sent = sent_by_key(global_arrays, updates, weighted_by_key=weighted_by_key)
    floating = [k for k in sent if np.issubdtype(global_arrays[k].dtype, np.floating)]
    for module, keys in keys_by_module(floating).items():
        senders = [{c.site for c in sent[k]} for k in keys]
        sites = sorted(set.intersection(*senders))
        partial = sorted(set.union(*senders) - set(sites))
        if partial:
            log(WARNING, "round %s: module %s: sites %s sent only part of it; left out of Krum", server_round, module, partial)
        n = len(sites)
        if n <= 2 * num_malicious + 2:
            log(
                WARNING,
                "round %s: module %s: Krum needs more than 2 * num_malicious + 2 = %d sites, %d sent it; "
                "using the weighted average", server_round, module, 2 * num_malicious + 2, n,
            )  # fmt: skip
            continue
        m = num_selected or n - num_malicious
        if m > n - num_malicious:
            log(WARNING, "round %s: module %s: num_selected %d > n - f = %d; averaging %d", server_round, module, m, n - num_malicious, n - num_malicious)
            m = n - num_malicious
        values = {(c.site, k): c.value for k in keys for c in sent[k]}
        distances = squared_distances([[values[site, k] for k in keys] for site in sites])
        chosen = [sites[i] for i in multikrum_select(distances, num_malicious=num_malicious, num_selected=m)]
        for key in keys:
            mean = np.mean([values[site, key].astype(np.float64) for site in chosen], axis=0)
            merged[key] = np.asarray(mean, dtype=global_arrays[key].dtype)
    return merged


@STRATEGIES.register("multikrum")
class ModalityAwareMultiKrum(ModalityAwareStrategy):
    """Modality-aware Multi-Krum (:func:`aggregate_multikrum`).

    Args:
        num_malicious: f, the number of Byzantine sites to tolerate.
        num_selected: m, the number of sites to average (0: n - f per module).
        **kwargs: passed to :class:`~server.strategies.base.ModalityAwareStrategy`.

    References:
        Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
        Gradient Descent", NeurIPS, https://arxiv.org/abs/1703.02757
    """

    hyperparameters = ("num_malicious", "num_selected")

    def __init__(self, *, num_malicious: int = 0, num_selected: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_malicious = num_malicious
        self.num_selected = num_selected

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        return aggregate_multikrum(
            global_arrays, updates,
            num_malicious=self.num_malicious, num_selected=self.num_selected,
            weighted_by_key=self.weighted_by_key, server_round=server_round,
        )  # fmt: skip
