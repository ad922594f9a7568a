"""Modality-aware FedAvg: each module is averaged over the sites that trained it.

Flower's FedAvg rejects replies whose ArrayRecords have different keys and weights every
key by one number per reply; a site without images sends no image encoder, so we subclass
and aggregate per module, keeping the previous global value of modules nobody trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from client.messages import NUM_EXAMPLES, SITE, SITE_NAME, module_weight_key
from fusion_models.model import module_of
from fusion_models.registry import Registry

__all__ = ["ModalityAwareFedAvg", "aggregate_modules", "STRATEGIES"]

#: Strategy name -> class; chosen by ``configs/strategy/<name>.yaml``.
STRATEGIES: Registry = Registry("strategy")


@STRATEGIES.register("fedavg")
@STRATEGIES.register("fedprox")  # FedProx aggregates like FedAvg; its proximal term runs at the sites
class ModalityAwareFedAvg(FedAvg):
    """FedAvg whose weights are per module: ``num-examples.<module>`` in each reply's metrics.

    Args:
        on_site_metrics: called with (round, kind, site, MetricRecord) for every good reply,
            so the run can record per-site curves (``kind`` is "train" or "evaluate").
        reject_nonfinite: drop a reply whose arrays hold NaN or inf (logged with its site).
        **kwargs: passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(
        self,
        *,
        on_site_metrics: Callable[[int, str, str, MetricRecord], None] | None = None,
        reject_nonfinite: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.on_site_metrics = on_site_metrics
        self.reject_nonfinite = reject_nonfinite
        self._global: dict[str, np.ndarray] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        valid = [m for m in valid if self._usable(server_round, m)]
        if not valid:
            return None, None
        for message in valid:
            self._report(server_round, "train", message)
        merged = aggregate_modules(
            self._global,
            [(m.content[self.arrayrecord_key], _metrics(m)) for m in valid],
            weighted_by_key=self.weighted_by_key,
        )
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in merged.items()}), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        for message in replies:
            if not message.has_error():
                self._report(server_round, "evaluate", message)
        return super().aggregate_evaluate(server_round, replies)

    def _usable(self, server_round: int, message: Message) -> bool:
        site = _site(message)
        content = message.content
        if self.arrayrecord_key not in content.array_records or not content.metric_records:
            log(WARNING, "round %s: reply from %s has no arrays or metrics; ignored", server_round, site)
            return False
        if self.reject_nonfinite:
            for key, value in content[self.arrayrecord_key].items():
                if not np.all(np.isfinite(value.numpy())):
                    log(WARNING, "round %s: reply from %s has non-finite values in %s; ignored", server_round, site, key)
                    return False
        unknown = set(content[self.arrayrecord_key].keys()) - set(self._global)
        if unknown:
            log(WARNING, "round %s: reply from %s has unknown keys %s; ignored", server_round, site, sorted(unknown)[:3])
            return False
        return True

    def _report(self, server_round: int, kind: str, message: Message) -> None:
        if self.on_site_metrics is not None and message.content.metric_records:
            self.on_site_metrics(server_round, kind, _site(message), _metrics(message))


def _metrics(message: Message) -> MetricRecord:
    return next(iter(message.content.metric_records.values()))


def _site(message: Message) -> str:
    record = message.content.config_records.get(SITE)
    if record is not None and SITE_NAME in record:
        return str(record[SITE_NAME])
    return f"node {message.metadata.src_node_id}"


def aggregate_modules(
    global_arrays: dict[str, np.ndarray],
    updates: list[tuple[ArrayRecord, MetricRecord]],
    *,
    weighted_by_key: str = NUM_EXAMPLES,
) -> dict[str, np.ndarray]:
    """Weighted average of each module over the updates that contain it.

    A reply weights module ``m`` by its metric ``num-examples.<m>`` when present (the
    samples that carried that modality), else by ``weighted_by_key``. Keys no update holds
    keep their global value; integer buffers (e.g. counters) take the largest weight's value.
    """
    merged: dict[str, np.ndarray] = {}
    for key, current in global_arrays.items():
        module = module_of(key)
        values, weights = [], []
        for arrays, metrics in updates:
            if key not in arrays:
                continue
            weight = float(metrics.get(module_weight_key(module), metrics.get(weighted_by_key, 0.0)))
            if weight > 0:
                values.append(arrays[key].numpy())
                weights.append(weight)
        if not values:
            merged[key] = current
            continue
        if not np.issubdtype(current.dtype, np.floating):
            merged[key] = values[int(np.argmax(weights))]
            continue
        w = np.asarray(weights, dtype=np.float64) / sum(weights)
        merged[key] = sum(wi * v.astype(np.float64) for wi, v in zip(w, values)).astype(current.dtype)
    return merged
