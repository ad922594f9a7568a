"""Secure aggregation (``secure_aggregation=secaggplus``): each round's training goes through
Flower's SecAgg+ protocol, so the server learns only the sum of the sites' updates.

Flower 1.42 runs SecAgg+ (``SecAggPlusWorkflow`` at the server, ``secaggplus_mod`` at the
sites) on its legacy workflow: a legacy strategy's ``configure_fit``/``aggregate_fit`` and
one weight per reply. fedfusion keeps its Message-API strategies and runs the protocol
inside one round instead:

1. ``configure_train`` samples the sites as the wrapped rule does and keeps the messages;
2. ``aggregate_train`` runs SecAgg+ over them (key set-up, masked training replies,
   unmasking), with a legacy strategy that only collects what the workflow hands it;
3. each site sends its per-module update pre-weighted, with its weights, in one vector per
   module (:mod:`client.secure_update`), so the unmasked mean gives per-module FedAvg exactly
   (up to quantisation), including modules some sites lack;
4. that mean goes to the wrapped rule as its one reply: FedAvg takes it as is, the server
   optimisers take ``mean - global`` as their pseudo-gradient.

What the server still sees: each site's figures (loss, steps, sample counts, epsilon), as
without secure aggregation, and the statistics round before training. The robust rules
(median, trimmed mean, krum, multi-krum) need each site's update and cannot run on a sum;
client-level DP on the server clips each update and cannot either.

References:
    Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS,
    https://eprint.iacr.org/2020/704
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitRes, Parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from client.messages import (
    ARRAYS,
    CONFIG,
    METRICS,
    SECURE_CLIPPING_RANGE,
    SECURE_SCALE,
    SECURE_SITE,
    SECURE_STATUS_CODE,
    SECURE_STATUS_REASON,
    module_weight_key,
)
from client.secure_update import decode_mean
from server.settings import SECURE_STRATEGIES
from server.strategies.aggregation import Update
from server.strategies.base import ModalityAwareStrategy
from server.strategies.fedavg import ModalityAwareFedAvg
from server.strategies.server_optimiser import ServerOptimiserStrategy

__all__ = ["SECURE_STRATEGIES", "SecureAggregationStrategy", "secure_round"]



class _FedfusionSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+, unchanged, except that its masking stage sends each site fedfusion's
    own train content (named arrays, the round config) instead of a legacy ``FitIns``."""

    def __init__(self, contents: dict[int, RecordDict], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._contents = contents

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = super().setup_stage(grid, context, state)
        state.nid_to_fitins = {nid: self._contents[nid] for nid in state.nid_to_fitins}
        return ok


@dataclass
class _Collector(LegacyStrategy):
    """The legacy strategy SecAgg+ drives: it names the sampled nodes and keeps what the
    workflow hands back (every site's ``FitRes``, each holding the unmasked mean). Only
    ``configure_fit`` and ``aggregate_fit`` are called; fedfusion evaluates through the
    Message API."""

    grid: Grid
    nodes: list[int]
    results: list[tuple[ClientProxy, FitRes]] | None = None
    failures: list[Any] = field(default_factory=list)

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list:
        from flwr.common import FitIns

        run_id = self.grid.run.run_id
        return [(GridClientProxy(node, self.grid, run_id), FitIns(Parameters(tensors=[], tensor_type=""), {}))
                for node in self.nodes]  # fmt: skip

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        self.results, self.failures = list(results), list(failures)
        return None, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def secure_round(
    grid: Grid, messages: Sequence[Message], server_round: int, **workflow: Any
) -> tuple[list[FitRes], list[Any]] | None:
    """Run one SecAgg+ training round over ``messages`` (one per sampled site, each with the
    arrays and config of a train message); returns every site's ``FitRes`` (its figures, and
    the unmasked mean as parameters) and the failures, or ``None`` when the protocol halted
    (fewer than 2 sites sampled, or too few answered a stage; Flower logs which).

    ``workflow``: ``SecAggPlusWorkflow``'s arguments (``num_shares``, ``reconstruction_threshold``,
    ``clipping_range``, ``quantization_range``, ``modulus_range``, ``timeout``).
    """
    contents = {m.metadata.dst_node_id: RecordDict({ARRAYS: m.content[ARRAYS], CONFIG: m.content[CONFIG]})
                for m in messages}  # fmt: skip
    collector = _Collector(grid=grid, nodes=list(contents))
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=collector)  # fmt: skip
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
    # Every site reports weight 1 (its weights are inside its vectors): max_weight 1 keeps
    # Flower from scaling the vectors down by 1 / max_weight before quantising them.
    _FedfusionSecAggPlus(contents, max_weight=1.0, **workflow)(grid, context)
    if collector.results is None:
        return None
    return [fitres for _, fitres in collector.results], collector.failures


class SecureAggregationStrategy(ModalityAwareStrategy):
    """A rule of the mean (FedAvg/FedProx or a server optimiser) over SecAgg+'s sum.

    Args:
        inner: the wrapped rule; its sampling and record settings are taken over.
        weight_scale: the bound the sites divide their sample counts by (the largest site's
            training rows), so every weight in a vector is at most 1.
        num_shares, reconstruction_threshold: SecAgg+'s key shares per site and the shares
            needed to unmask (a float: a share of the sampled sites, Flower's convention).
        clipping_range, quantization_range, modulus_range: SecAgg+'s quantisation; a site
            whose weighted update leaves ``[-clipping_range, clipping_range]`` refuses to
            send it, naming the key.
        timeout: seconds SecAgg+ waits for each stage's replies (``None``: no limit).
    """

    hyperparameters: ClassVar[tuple[str, ...]] = ("num_shares", "reconstruction_threshold", "clipping_range",
                                                  "quantization_range", "weight_scale")  # fmt: skip

    def __init__(
        self,
        inner: ModalityAwareStrategy,
        *,
        weight_scale: float,
        num_shares: int | float = 1.0,
        reconstruction_threshold: int | float = 0.67,
        clipping_range: float = 8.0,
        quantization_range: int = 2**22,
        modulus_range: int = 2**32,
        timeout: float | None = 3600.0,
    ) -> None:
        if type(inner) is not ModalityAwareFedAvg and not isinstance(inner, ServerOptimiserStrategy):
            raise ValueError(f"secure aggregation wraps only rules of the mean ({', '.join(SECURE_STRATEGIES)}); "
                             f"{type(inner).__name__} needs each site's update")  # fmt: skip
        if not weight_scale > 0:
            raise ValueError(f"secure aggregation: weight_scale must be > 0, got {weight_scale!r}")
        super().__init__(**self.wrapped_kwargs(inner))
        self.inner = inner
        self.weight_scale = float(weight_scale)
        self.num_shares = num_shares
        self.reconstruction_threshold = reconstruction_threshold
        self.clipping_range = float(clipping_range)
        self.quantization_range = int(quantization_range)
        self.modulus_range = int(modulus_range)
        self.timeout = timeout
        self._messages: list[Message] = []
        self._grid: Grid | None = None

    def summary(self) -> None:
        log(INFO, "\t├──> SecAgg+ around %s: %s", type(self.inner).__name__,
            {n: getattr(self, n) for n in self.hyperparameters})  # fmt: skip
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample as the wrapped rule does and keep the messages; nothing goes out here: the
        round's training runs inside SecAgg+ in :meth:`aggregate_train`."""
        config[SECURE_SCALE] = self.weight_scale
        config[SECURE_CLIPPING_RANGE] = self.clipping_range
        self._messages = list(super().configure_train(server_round, arrays, config, grid))
        self._grid = grid
        return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        messages, self._messages = self._messages, []
        if self._grid is None or not messages:
            return None, None
        outcome = secure_round(self._grid, messages, server_round, num_shares=self.num_shares,
                               reconstruction_threshold=self.reconstruction_threshold,
                               clipping_range=self.clipping_range, quantization_range=self.quantization_range,
                               modulus_range=self.modulus_range, timeout=self.timeout)  # fmt: skip
        if outcome is None:
            log(WARNING, "round %s: SecAgg+ halted (Flower's error above: fewer than 2 sites sampled, or fewer than the "
                "reconstruction threshold answered a stage); the global model stays", server_round)  # fmt: skip
            return None, None
        results, failures = outcome
        if failures:
            log(WARNING, "round %s: %d site(s) failed during SecAgg+; the sum covers the others", server_round, len(failures))
        trained = []
        for fitres in results:
            figures = dict(fitres.metrics)
            site = str(figures.pop(SECURE_SITE, "?"))
            code, reason = figures.pop(SECURE_STATUS_CODE, None), figures.pop(SECURE_STATUS_REASON, "")
            record = MetricRecord({k: v for k, v in figures.items() if isinstance(v, (int, float))})
            if code is not None:
                log(WARNING, "round %s: %s declined the round (%s): %s", server_round, site, code, reason)
            if self.on_site_metrics is not None:
                self.on_site_metrics(server_round, "refused" if code is not None else "train", site, record)
            if code is None:
                trained.append(RecordDict({METRICS: record}))
        if not trained:
            return None, None
        # every site's FitRes holds the same unmasked mean over the len(results) sites
        mean = parameters_to_ndarrays(results[0].parameters)
        merged, weights = decode_mean(self._global, mean, min_weight=0.5 / (self.weight_scale * len(results)))
        total = {module_weight_key(m): w * self.weight_scale * len(results) for m, w in weights.items()}
        new = self.aggregate(server_round, self._global, [(merged, total)] if merged else [])
        metrics = self.train_metrics_aggr_fn(trained, self.weighted_by_key)
        return ArrayRecord({k: Array(np.asarray(v, order="C")) for k, v in new.items()}), metrics

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        """The wrapped rule on ``updates``: here the one reply decoded from SecAgg+'s mean."""
        return self.inner.aggregate(server_round, global_arrays, updates)
