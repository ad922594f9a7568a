"""The layout of a train reply under secure aggregation (``secure_aggregation=secaggplus``).

SecAgg+ gives the server one number per coordinate: the sum of every site's vector (Flower
divides it by the sites' reported weights; each site reports 1, so it is the mean). To keep
FedAvg's per-module weights, each site sends, per module in a fixed order, one flat vector:
its update ``sent - global`` over the module's floating keys times ``w = n_module / scale``,
followed by ``w`` itself (``n_module``: the samples that carried the module, ``scale``: a
bound on them the server sends, so ``w <= 1``). A module the site did not send (no such
modality, kept at the site by FedPer, a refused round) is all zeros. The mean of the
vectors then gives, per module, ``sum(w * delta) / sum(w)``: exactly the weighted mean of
:func:`server.strategies.aggregation.aggregate_modules`, up to SecAgg+'s quantisation.

Integer buffers (counters) are not in the vector and keep their global value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fusion_models.module_keys import module_of

__all__ = ["secure_layout", "encode_update", "decode_mean"]


def _numpy(value: Any) -> np.ndarray:
    value = value.numpy() if hasattr(value, "numpy") else value
    return np.asarray(value)


def secure_layout(global_arrays: Mapping[str, Any]) -> dict[str, list[str]]:
    """Module -> its floating keys, modules sorted, keys in the model's order: the order
    both sides build the vectors in."""
    layout: dict[str, list[str]] = {}
    for key, value in global_arrays.items():
        if np.issubdtype(_numpy(value).dtype, np.floating):
            layout.setdefault(module_of(key), []).append(key)
    return dict(sorted(layout.items()))


def encode_update(
    global_arrays: Mapping[str, Any],
    sent: Mapping[str, Any],
    counts: Mapping[str, float],
    *,
    scale: float,
    clipping_range: float,
) -> list[np.ndarray]:
    """One site's vectors (one per module of :func:`secure_layout`), float64.

    Args:
        global_arrays: the global model the round started from.
        sent: the modules this site trained and would send (state-dict entries).
        counts: ``module -> n_module``, the samples that carried each module this round.
        scale: the bound ``n_module`` is divided by (the server sends it).
        clipping_range: SecAgg+ clips every coordinate to this range before quantising it.

    Raises:
        ValueError: a coordinate would be clipped (named, with the fix), or ``scale <= 0``.
    """
    if not scale > 0:
        raise ValueError(f"secure aggregation: the weight scale must be > 0, got {scale!r}")
    vectors = []
    for module, module_keys in secure_layout(global_arrays).items():
        size = sum(_numpy(global_arrays[k]).size for k in module_keys)
        weight = float(counts.get(module, 0.0)) / scale
        if weight <= 0 or any(k not in sent for k in module_keys):
            vectors.append(np.zeros(size + 1))
            continue
        parts = [(_numpy(sent[k]).astype(np.float64) - _numpy(global_arrays[k]).astype(np.float64)).ravel() * weight
                 for k in module_keys]  # fmt: skip
        vector = np.concatenate([*parts, [weight]])
        worst = int(np.argmax(np.abs(vector)))
        if not np.all(np.isfinite(vector)) or abs(vector[worst]) > clipping_range:
            offsets = np.cumsum([0] + [p.size for p in parts])
            key = module_keys[int(np.searchsorted(offsets, worst, side="right")) - 1] if worst < size else "the weight"
            raise ValueError(f"secure aggregation: {module} would be clipped: {key} moved by {vector[worst]:.4g} "
                             f"(times its weight) this round, outside secure_aggregation.clipping_range="
                             f"{clipping_range:g}; raise the range or lower train.lr")  # fmt: skip
        vectors.append(vector)
    return vectors


def decode_mean(
    global_arrays: Mapping[str, np.ndarray],
    vectors: list[np.ndarray],
    *,
    min_weight: float,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The per-module weighted mean from the mean of the sites' vectors.

    Args:
        global_arrays: the global model the round started from.
        vectors: the mean over the sites of :func:`encode_update`'s vectors.
        min_weight: a module whose mean weight is below this was sent by nobody (the weights
            are quantised: exact zeros come back as a few units of the last place).

    Returns:
        The new value of every key of a module somebody sent, and each such module's mean
        weight ``mean(n_module) / scale``.
    """
    layout = secure_layout(global_arrays)
    if len(vectors) != len(layout):
        raise ValueError(f"secure aggregation: {len(vectors)} vectors for {len(layout)} modules ({list(layout)})")
    merged: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    for (module, module_keys), vector in zip(layout.items(), vectors):
        vector = np.asarray(vector, dtype=np.float64).ravel()
        sizes = [global_arrays[k].size for k in module_keys]
        if vector.size != sum(sizes) + 1:
            raise ValueError(f"secure aggregation: {module}'s vector has {vector.size} values, expected {sum(sizes) + 1}")
        weight = float(vector[-1])
        if weight < min_weight:
            continue
        weights[module] = weight
        for key, part in zip(module_keys, np.split(vector[:-1], np.cumsum(sizes)[:-1])):
            value = global_arrays[key]
            merged[key] = np.asarray(value.astype(np.float64) + (part / weight).reshape(value.shape), dtype=value.dtype)
    return merged, weights
