"""The Message-API base class of every fedfusion strategy: it checks and records the replies,
and leaves the merge of the global arrays to one pure rule per subclass."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from client.messages import SITE, SITE_NAME, STATUS, STATUS_CODE, STATUS_REASON
from server.settings import StrategySettings
from server.strategies.aggregation import Update
from server.strategies.metric_aggregation import finite_weighted_mean

__all__ = ["ModalityAwareStrategy"]


class ModalityAwareStrategy(FedAvg):
    """A strategy whose rule runs per module, over the sites that sent that module.

    Flower's FedAvg, FedAdam, Krum and the rest reject replies whose ArrayRecords have
    different keys (a site without images sends no image encoder), so we subclass FedAvg
    for its sampling and checks and merge per module, keeping modules nobody sent. The figures
    Flower logs each round are averaged over the sites that could compute them
    (:func:`~server.strategies.metric_aggregation.finite_weighted_mean`).

    Subclasses implement :meth:`aggregate` (a thin call of a pure function) and name the
    :class:`~server.settings.StrategySettings` fields their constructor takes in
    ``hyperparameters``.

    Args:
        on_site_metrics: called with (round, kind, site, MetricRecord) for every good reply,
            so the run can record per-site curves (``kind`` is "train" or "evaluate").
        reject_nonfinite: drop a reply whose arrays hold NaN or inf (logged with its site).
        **kwargs: passed to :class:`flwr.serverapp.strategy.FedAvg` (sampling fractions,
            ``min_*_nodes``, record keys).
    """

    #: StrategySettings fields passed to the constructor by :meth:`settings_kwargs`.
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    #: Call :meth:`aggregate` in a round without usable replies too (central DP releases noise then).
    release_without_replies: ClassVar[bool] = False

    def __init__(
        self,
        *,
        on_site_metrics: Callable[[int, str, str, MetricRecord], None] | None = None,
        reject_nonfinite: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("evaluate_metrics_aggr_fn", finite_weighted_mean)
        kwargs.setdefault("train_metrics_aggr_fn", finite_weighted_mean)
        super().__init__(**kwargs)
        self.on_site_metrics = on_site_metrics
        self.reject_nonfinite = reject_nonfinite
        self._global: dict[str, np.ndarray] = {}

    @staticmethod
    def wrapped_kwargs(inner: "ModalityAwareStrategy") -> dict[str, Any]:
        """The constructor arguments a wrapper (central DP, SecAgg+) takes over from the rule
        it wraps: its metric callback, reply checks, sampling and record keys."""
        return {
            "on_site_metrics": inner.on_site_metrics, "reject_nonfinite": inner.reject_nonfinite,
            "fraction_train": inner.fraction_train, "fraction_evaluate": inner.fraction_evaluate,
            "min_train_nodes": inner.min_train_nodes, "min_evaluate_nodes": inner.min_evaluate_nodes,
            "min_available_nodes": inner.min_available_nodes, "weighted_by_key": inner.weighted_by_key,
            "arrayrecord_key": inner.arrayrecord_key, "configrecord_key": inner.configrecord_key,
            "train_metrics_aggr_fn": inner.train_metrics_aggr_fn, "evaluate_metrics_aggr_fn": inner.evaluate_metrics_aggr_fn,
        }  # fmt: skip

    @classmethod
    def settings_kwargs(cls, settings: StrategySettings) -> dict[str, Any]:
        """The constructor arguments this strategy takes from ``settings``; a field left
        ``None`` is omitted, so the constructor's own default applies."""
        values = {name: getattr(settings, name) for name in cls.hyperparameters}
        return {name: value for name, value in values.items() if value is not None}

    @abstractmethod
    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        """Merge the good replies of ``server_round`` into the new global arrays."""

    def summary(self) -> None:
        """Log the rule's hyper-parameters, then FedAvg's sampling summary."""
        log(INFO, "\t├──> %s: %s", type(self).__name__, {n: getattr(self, n) for n in self.hyperparameters})
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {k: v.numpy() for k, v in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        # in site order, not arrival order: float sums depend on the order, and arrival varies between runs
        valid = sorted((m for m in valid if self._usable(server_round, m)), key=_site)
        if not valid and not self.release_without_replies:
            return None, None
        for message in valid:
            self._report(server_round, "train", message)
        merged = self.aggregate(
            server_round, self._global, [(m.content[self.arrayrecord_key], _metrics(m)) for m in valid]
        )
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key) if valid else None
        # np.asarray, not ascontiguousarray: the latter turns 0-d buffers into shape (1,).
        return ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in merged.items()}), metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        for message in replies:
            if not message.has_error():
                self._report(server_round, "evaluate", message)
        # a site with an empty validation split reports nothing to weigh (FedAvg would divide by 0)
        weighed = [m for m in replies if m.has_error() or float(_metrics(m).get(self.weighted_by_key, 0)) > 0]
        if not any(not m.has_error() for m in weighed):
            return None
        return super().aggregate_evaluate(server_round, weighed)

    def _usable(self, server_round: int, message: Message) -> bool:
        site = _site(message)
        content = message.content
        status = content.config_records.get(STATUS)
        if status is not None:  # the site declined the round (e.g. its privacy budget): recorded, not aggregated
            log(WARNING, "round %s: %s declined the round (%s): %s", server_round, site, status.get(STATUS_CODE, "?"),
                status.get(STATUS_REASON, ""))  # fmt: skip
            if self.on_site_metrics is not None and content.metric_records:
                self.on_site_metrics(server_round, "refused", site, _metrics(message))
            return False
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
