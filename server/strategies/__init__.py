"""Modality-aware server strategies, chosen by name (``configs/strategy/<name>.yaml``).

Every strategy aggregates per module (``encoders.<modality>``, ``fusion``) over the sites
that sent that module; see :mod:`server.strategies.base` for why we do not use Flower's own.
Each rule is a pure function over numpy dicts in its own module; the classes call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO
from pathlib import Path

from flwr.app import MetricRecord
from flwr.common.logger import log

from server.central_accounting import noise_for_target
from server.settings import CentralDPSettings, SecureAggregationSettings, StrategySettings
from server.strategies.aggregation import aggregate_modules
from server.strategies.base import ModalityAwareStrategy
from server.strategies.central_dp import CENTRAL_DP_STRATEGIES, CentralDPStrategy
from server.strategies.fedadagrad import ModalityAwareFedAdagrad, fedadagrad_step
from server.strategies.fedadam import ModalityAwareFedAdam, fedadam_step
from server.strategies.fedavg import ModalityAwareFedAvg
from server.strategies.fedavgm import ModalityAwareFedAvgM, fedavgm_step
from server.strategies.fedyogi import ModalityAwareFedYogi, fedyogi_step
from server.strategies.krum import ModalityAwareKrum, aggregate_krum
from server.strategies.median import ModalityAwareMedian, aggregate_median
from server.strategies.multikrum import ModalityAwareMultiKrum, aggregate_multikrum
from server.strategies.registry import STRATEGIES
from server.strategies.secure_aggregation import SecureAggregationStrategy
from server.strategies.trimmed_mean import ModalityAwareTrimmedMean, aggregate_trimmed_mean

__all__ = [
    "CENTRAL_DP_STRATEGIES",
    "STRATEGIES",
    "CentralDPStrategy",
    "ModalityAwareFedAdagrad",
    "ModalityAwareFedAdam",
    "ModalityAwareFedAvg",
    "ModalityAwareFedAvgM",
    "ModalityAwareFedYogi",
    "ModalityAwareKrum",
    "ModalityAwareMedian",
    "ModalityAwareMultiKrum",
    "ModalityAwareStrategy",
    "ModalityAwareTrimmedMean",
    "SecureAggregationStrategy",
    "aggregate_krum",
    "aggregate_median",
    "aggregate_modules",
    "aggregate_multikrum",
    "aggregate_trimmed_mean",
    "build_strategy",
    "fedadagrad_step",
    "fedadam_step",
    "fedavgm_step",
    "fedyogi_step",
]


def build_strategy(
    settings: StrategySettings,
    *,
    on_site_metrics: Callable[[int, str, str, MetricRecord], None] | None,
    num_nodes: int,
    central_privacy: CentralDPSettings | None = None,
    central_privacy_file: str | Path | None = None,
    local_modules: Iterable[str] = (),
    rounds: int | None = None,
    secure_aggregation: SecureAggregationSettings | None = None,
    weight_scale: float | None = None,
) -> ModalityAwareStrategy:
    """The strategy ``settings.name`` names, with its hyper-parameters from ``settings``;
    under ``privacy=central_dp`` wrapped in :class:`CentralDPStrategy`, under
    ``secure_aggregation=secaggplus`` in :class:`SecureAggregationStrategy`.

    Args:
        settings: the checked strategy settings.
        on_site_metrics: called with (round, kind, site, MetricRecord) for every good reply.
        num_nodes: the nodes connected; no ``min_*_nodes`` asks for more than there are.
            Under central DP the mean's denominator is ``fraction_train * num_nodes``.
        central_privacy: client-level DP settings; ``None`` or disabled: no wrapper.
        central_privacy_file: where the server's epsilon per round is written.
        local_modules: modules the configuration keeps at the sites (never sent, never noised).
        rounds: the planned rounds; needed when ``central_privacy.target_epsilon`` sizes the noise.
        secure_aggregation: SecAgg+ settings; ``None`` or disabled: no wrapper.
        weight_scale: under SecAgg+, the bound on a site's sample count (the largest site's rows).

    Raises:
        KeyError: an unknown strategy name (the message lists the known ones).
    """
    cls = STRATEGIES.get(settings.name)
    min_nodes = min(settings.min_nodes, num_nodes)
    strategy = cls(
        **cls.settings_kwargs(settings),
        on_site_metrics=on_site_metrics,
        fraction_train=settings.fraction_train,
        fraction_evaluate=settings.fraction_evaluate,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    if secure_aggregation is not None and secure_aggregation.enabled:
        if central_privacy is not None and central_privacy.enabled:
            raise ValueError("secure aggregation and central DP cannot run together (the server clips each update)")
        if weight_scale is None:
            raise ValueError("secure aggregation needs weight_scale, the bound on a site's sample count")
        secure = secure_aggregation
        return SecureAggregationStrategy(strategy, weight_scale=weight_scale, num_shares=secure.num_shares,
                                         reconstruction_threshold=secure.reconstruction_threshold,
                                         clipping_range=secure.clipping_range,
                                         quantization_range=secure.quantization_range, timeout=secure.timeout_s)  # fmt: skip
    if central_privacy is None or not central_privacy.enabled:
        return strategy
    dp = central_privacy
    noise_multiplier = dp.noise_multiplier
    if dp.target_epsilon is not None:
        if rounds is None:
            raise ValueError("privacy.target_epsilon sizes the server's noise for the planned rounds: pass rounds")
        noise_multiplier = noise_for_target(dp.target_epsilon, delta=dp.delta, sample_rate=settings.fraction_train,
                                            rounds=rounds)  # fmt: skip
        log(INFO, "fedfusion: client-level DP noise multiplier %.4f for epsilon %g at delta %.3g over %d rounds "
            "(site sample rate %g)", noise_multiplier, dp.target_epsilon, dp.delta, rounds, settings.fraction_train)
    return CentralDPStrategy(strategy, noise_multiplier=noise_multiplier, clipping_norm=dp.clipping_norm,
                             expected_sites=settings.fraction_train * num_nodes, delta=dp.delta, clipping=dp.clipping,
                             target_quantile=dp.target_quantile, clip_lr=dp.clip_lr,
                             clipped_count_stddev=dp.clipped_count_stddev, local_modules=local_modules,
                             privacy_file=central_privacy_file, target_epsilon=dp.target_epsilon)  # fmt: skip
