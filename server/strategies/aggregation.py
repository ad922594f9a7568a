"""Pure per-module aggregation: which sites sent which keys, and the weighted average of them.

Every rule of ``server.strategies`` starts from :func:`sent_by_key`: a key's contributions
are the updates that hold it and weight its module above zero (``num-examples.<module>``, else
``num-examples``). Keys nobody sent keep their global value. Nothing here sees a Message, so
each rule can be tested on plain numpy dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from client.messages import NUM_EXAMPLES, module_weight_key
from fusion_models.module_keys import module_of

__all__ = [
    "Contribution",
    "Update",
    "aggregate_modules",
    "aggregate_per_key",
    "as_numpy",
    "average_sent",
    "fedavg_rule",
    "keys_by_module",
    "module_weight",
    "sent_by_key",
]

#: One site's reply: its arrays (numpy, torch or Flower ``Array`` values) and its metrics.
Update = tuple[Mapping[str, Any], Mapping[str, Any]]


class Contribution(NamedTuple):
    """One site's value of one key, with the weight of that key's module at that site."""

    site: int  # index of the update in the list given to the rule
    value: np.ndarray
    weight: float


def as_numpy(value: Any) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor or a Flower ``Array``."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def module_weight(metrics: Mapping[str, Any], module: str, *, weighted_by_key: str = NUM_EXAMPLES) -> float:
    """The weight a reply gives ``module``: ``num-examples.<module>``, else ``weighted_by_key``."""
    return float(metrics.get(module_weight_key(module), metrics.get(weighted_by_key, 0.0)))


def sent_by_key(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, list[Contribution]]:
    """For each global key some update sent with a positive module weight, its contributions.

    Keys that no update sent (or only with weight 0) are absent from the result.
    """
    sent: dict[str, list[Contribution]] = {}
    for key in global_arrays:
        module = module_of(key)
        for site, (arrays, metrics) in enumerate(updates):
            if key not in arrays:
                continue
            weight = module_weight(metrics, module, weighted_by_key=weighted_by_key)
            if weight > 0:
                sent.setdefault(key, []).append(Contribution(site, as_numpy(arrays[key]), weight))
    return sent


def keys_by_module(keys: Iterable[str]) -> dict[str, list[str]]:
    """Group keys by their module (``encoders.<modality>`` or ``fusion``), in the given order."""
    grouped: dict[str, list[str]] = {}
    for key in keys:
        grouped.setdefault(module_of(key), []).append(key)
    return grouped


def fedavg_rule(contributions: Sequence[Contribution], dtype: np.dtype) -> np.ndarray:
    """The weighted mean of ``contributions`` cast to ``dtype``; integer buffers (counters)
    take the value of the largest weight, since a mean of counters means nothing.

    References:
        McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", https://arxiv.org/abs/1602.05629
    """
    weights = np.asarray([c.weight for c in contributions], dtype=np.float64)
    if not np.issubdtype(dtype, np.floating):
        return contributions[int(np.argmax(weights))].value
    weights = weights / weights.sum()
    return np.asarray(sum(w * c.value.astype(np.float64) for w, c in zip(weights, contributions)), dtype=dtype)


def average_sent(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """The per-module weighted average of every key some site sent; unsent keys are absent.

    This is what the server optimisers take their pseudo-gradient from: a key absent here
    gets no optimiser step.
    """
    sent = sent_by_key(global_arrays, updates, weighted_by_key=weighted_by_key)
    return {key: fedavg_rule(contributions, global_arrays[key].dtype) for key, contributions in sent.items()}


def aggregate_modules(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """Weighted average of each module over the updates that contain it (modality-aware FedAvg).

    A reply weights module ``m`` by its metric ``num-examples.<m>`` when present (the
    samples that carried that modality), else by ``weighted_by_key``. Keys no update holds
    keep their global value; integer buffers (e.g. counters) take the largest weight's value.

    Args:
        global_arrays: the global model's arrays before this round, key -> array.
        updates: one (arrays, metrics) pair per site that replied.
        weighted_by_key: the metric that weights a module whose own count is missing.

    References:
        McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", https://arxiv.org/abs/1602.05629
    """
    return {**global_arrays, **average_sent(global_arrays, updates, weighted_by_key=weighted_by_key)}


def aggregate_per_key(
    global_arrays: Mapping[str, np.ndarray],
    updates: Sequence[Update],
    rule: Callable[[np.ndarray], np.ndarray],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """Apply ``rule`` to each floating key's stacked values (``[n_sent, *shape]``) over the
    sites that sent it; integer buffers take :func:`fedavg_rule`, unsent keys their global value.

    The robust rules ignore the weights' sizes on purpose: a site that lies about its values
    can lie about its sample count too.
    """
    merged = dict(global_arrays)
    for key, contributions in sent_by_key(global_arrays, updates, weighted_by_key=weighted_by_key).items():
        dtype = global_arrays[key].dtype
        if not np.issubdtype(dtype, np.floating):
            merged[key] = fedavg_rule(contributions, dtype)
            continue
        stacked = np.stack([c.value.astype(np.float64) for c in contributions])
        merged[key] = np.asarray(rule(stacked), dtype=dtype)
    return merged
