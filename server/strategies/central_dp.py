"""Client-level differential privacy on the server (``privacy=central_dp``), per module.

Each round the server

1. samples every connected site independently with probability ``q = fraction_train``
   (Poisson sampling, which the RDP accountant of :mod:`server.central_accounting` assumes);
2. clips each reply's update ``delta = sent - global``, over the concatenation of **every
   floating key the site sent** (its modules with a positive weight), to L2 norm ``C``:
   a site that lacks a module contributes zeros there, inside the same bound;
3. adds Gaussian noise to **every floating coordinate of the model** (every module, sent this
   round or not), std ``z C / n``, on the unweighted mean ``sum(clipped deltas) / n`` with the
   fixed denominator ``n = q N`` (the expected sampled sites, McMahan et al.'s fixed-denominator
   estimator): the sum's sensitivity to one site is ``C`` whatever modules it sent, so each
   round is the sampled Gaussian mechanism with noise multiplier ``z``;
4. hands that noisy mean to the wrapped rule as its one reply (FedAvg takes it as is, the
   server optimisers take ``mean - global`` as their pseudo-gradient): post-processing, so the
   guarantee carries over.

Why every coordinate: which modules a site sends depends on its data (a site without images
sends no image encoder); a module left exactly unchanged when nobody sent it would tell the
world that no sampled site had that modality. The guarantee is per site over the whole model,
so a module with fewer senders is as private as the others; its update is the sum over its
``k`` senders divided by ``n``, i.e. ``k / n`` of their mean, under the same noise, so its
signal-to-noise ratio is ``k / n`` of a module every site sends. Integer buffers (counters)
keep their global value: a site's counter is not clipped and would leak. Modules the
configuration keeps at the sites (``local_modules``, e.g. FedPer's) are never sent, so they are
neither clipped nor noised.

Sample counts do not weight anything here (the accounting needs fixed weights; a site's
``num-examples`` would let a large site dominate its own bound): the ``num-examples.<module>``
metrics only decide which modules a site sent.

What it does not cover: the server sees every site's raw update (it is trusted; secure
aggregation would remove that, see README); the feature statistics of the round before
training, and the metrics and sample counts of every reply, travel as they are.

Why not Flower's ``DifferentialPrivacyServerSide*Clipping`` wrappers: they need identical keys
and equal weights in every reply, draw noise from numpy's global (seedable) generator, and the
adaptive one counts *clipped* updates with sensitivity 1 while its noise formula assumes the
centred count of *unclipped* ones (sensitivity 1/2), which moves the norm away from its target;
we reuse their pure functions (``get_norm``, ``clip_inputs_inplace``, ``compute_stdv``,
``compute_adaptive_noise_params``).

References:
    McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models", ICLR,
    https://arxiv.org/abs/1710.06963
    Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", NeurIPS,
    https://arxiv.org/abs/1905.03871
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore.differential_privacy import (
    clip_inputs_inplace,
    compute_adaptive_noise_params,
    compute_stdv,
    get_norm,
)

from fusion_models.module_keys import module_of
from server.central_accounting import CentralAccountant
from server.strategies.aggregation import Update, as_numpy, module_weight
from server.strategies.base import ModalityAwareStrategy
from server.strategies.fedavg import ModalityAwareFedAvg
from server.strategies.server_optimiser import ServerOptimiserStrategy

__all__ = [
    "CENTRAL_DP_STRATEGIES",
    "CentralDPStrategy",
    "ClippedUpdate",
    "adaptive_clipping_norm",
    "clip_update",
    "default_count_stddev",
    "noisy_mean",
    "poisson_sample",
    "update_noise_multiplier",
]

#: Strategy names whose rule is a function of the mean alone, so central DP can feed it the
#: noisy mean. The robust rules (median, trimmed_mean, krum, multikrum) need each site's
#: update, which central DP never releases.
CENTRAL_DP_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


class ClippedUpdate(NamedTuple):
    """One site's update clipped to C: ``delta`` over the floating keys it sent (float64),
    its norm before clipping, and whether clipping scaled it down (norm > C)."""

    delta: dict[str, np.ndarray]
    norm: float
    clipped: bool


def clip_update(
    global_arrays: Mapping[str, np.ndarray],
    arrays: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    clipping_norm: float,
    weighted_by_key: str = "num-examples",
    local_modules: Iterable[str] = (),
) -> ClippedUpdate:
    """``arrays - global`` over the floating keys the site sent, scaled to L2 norm
    ``clipping_norm`` when its norm (over all those keys together) is larger.

    A key counts as sent when it is in ``arrays``, floating in ``global_arrays``, its module
    has a positive weight in ``metrics`` (as :func:`~server.strategies.aggregation.sent_by_key`
    decides) and is not in ``local_modules``. An update of norm 0 is left as it is.

    References:
        McMahan et al. 2018 (flat clipping), https://arxiv.org/abs/1710.06963
    """
    local = set(local_modules)
    keys = [
        key for key in arrays
        if key in global_arrays and np.issubdtype(global_arrays[key].dtype, np.floating)
        and module_of(key) not in local
        and module_weight(metrics, module_of(key), weighted_by_key=weighted_by_key) > 0
    ]  # fmt: skip
    deltas = [as_numpy(arrays[k]).astype(np.float64) - global_arrays[k].astype(np.float64) for k in keys]
    norm = get_norm(deltas) if deltas else 0.0
    clipped = norm > clipping_norm
    if clipped:
        clip_inputs_inplace(deltas, clipping_norm)  # scales by C / norm in place
    return ClippedUpdate(dict(zip(keys, deltas)), norm, clipped)


def noisy_mean(
    global_arrays: Mapping[str, np.ndarray],
    deltas: Sequence[Mapping[str, np.ndarray]],
    *,
    noise_std: float,
    denominator: float,
    rng: np.random.Generator,
    local_modules: Iterable[str] = (),
) -> dict[str, np.ndarray]:
    """``global + sum(deltas) / denominator + N(0, noise_std^2)`` on every floating key but those of
    ``local_modules``; a delta without a key adds zero there. Other keys keep their global
    value. Values are cast back to each key's dtype.

    Args:
        global_arrays: the global arrays before the round.
        deltas: each aggregated site's clipped update (:attr:`ClippedUpdate.delta`).
        noise_std: std of the noise on each coordinate of the mean (``z C / n``).
        denominator: ``n``, fixed before the round (the expected sampled sites).
        rng: where the noise comes from (seeded from the OS in a run: the run's seed is public).
        local_modules: modules the configuration keeps at the sites (never sent, never noised).
    """
    if not denominator > 0:
        raise ValueError(f"denominator must be > 0, got {denominator!r}")
    local = set(local_modules)
    merged = dict(global_arrays)
    for key, value in global_arrays.items():
        if not np.issubdtype(value.dtype, np.floating) or module_of(key) in local:
            continue
        total = np.zeros(value.shape, dtype=np.float64)
        for delta in deltas:
            if key in delta:
                total += delta[key]
        noise = rng.normal(0.0, noise_std, size=value.shape) if noise_std > 0 else 0.0
        merged[key] = np.asarray(value.astype(np.float64) + total / denominator + noise, dtype=value.dtype)
    return merged


def adaptive_clipping_norm(
    clipping_norm: float,
    *,
    unclipped: Sequence[bool],
    target_quantile: float,
    lr: float,
    count_stddev: float,
    expected_sites: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Andrew et al.'s geometric update of C: ``C exp(-lr (b - target_quantile))``.

    ``b`` is the noisy share of updates whose norm was at most C, from the centred count
    ``b = 1/2 + (sum(unclipped_i - 1/2) + N(0, count_stddev^2)) / expected_sites``; centring
    halves the count's sensitivity to 1/2, which the effective noise multiplier of
    :func:`update_noise_multiplier` assumes (as TF Privacy's quantile estimator does).

    Returns:
        The next C and the noisy unclipped share ``b``.

    References:
        Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping",
        https://arxiv.org/abs/1905.03871 (Algorithm 1, Section 3)
    """
    centred = float(sum(1.0 if u else 0.0 for u in unclipped) - 0.5 * len(unclipped))
    noise = float(rng.normal(0.0, count_stddev)) if count_stddev > 0 else 0.0
    share = 0.5 + (centred + noise) / expected_sites
    return float(clipping_norm * math.exp(-lr * (share - target_quantile))), share


def default_count_stddev(*, noise_multiplier: float, expected_sites: float) -> float:
    """sigma_b when not set: Andrew et al.'s ``n / 20``, raised to ``noise_multiplier`` so that
    few sites still leave the update noise finite (it grows by at most ``2 / sqrt(3)``)."""
    return max(expected_sites / 20.0, noise_multiplier)


def update_noise_multiplier(noise_multiplier: float, *, count_stddev: float, expected_sites: float) -> float:
    """z_update, the update's noise multiplier that makes the update and count queries together
    a Gaussian mechanism with ``noise_multiplier``: ``(z^-2 - (2 sigma_b)^-2)^(-1/2)``.

    Raises:
        ValueError: ``noise_multiplier >= 2 count_stddev`` (no finite z_update exists), naming
            ``privacy.clipped_count_stddev``.

    References:
        Andrew et al. 2021, https://arxiv.org/abs/1905.03871 (Theorem 1)
    """
    if noise_multiplier > 0 and not noise_multiplier < 2 * count_stddev:
        raise ValueError(f"privacy.clipped_count_stddev must be > noise_multiplier / 2 = {noise_multiplier / 2:g} for "
                         f"adaptive clipping (got {count_stddev:g}); raise it, or use privacy.clipping=fixed")  # fmt: skip
    return float(compute_adaptive_noise_params(noise_multiplier, expected_sites, count_stddev)[1])


def poisson_sample(nodes: Sequence[int], *, rate: float, rng: np.random.Generator) -> list[int]:
    """Each node independently with probability ``rate`` (all of them when ``rate`` is 1)."""
    if rate >= 1.0:
        return list(nodes)
    return [node for node in nodes if rng.random() < rate]


class CentralDPStrategy(ModalityAwareStrategy):
    """Client-level DP around a modality-aware rule: clip each site's update, noise the mean.

    A :class:`ModalityAwareStrategy` itself (it needs the same reply checks, site records and
    per-module global arrays) wrapping one whose rule is a function of the mean, so the noisy
    mean can be handed to it as its one reply (see the module docstring).

    Args:
        inner: the rule to wrap: FedAvg/FedProx or a server optimiser (FedAvgM, FedAdam,
            FedYogi, FedAdagrad); its sampling and record settings are taken over.
        noise_multiplier: z, the effective noise multiplier the accounting uses (> 0 in a run;
            0 releases the clipped mean without noise, epsilon infinite).
        clipping_norm: C; under adaptive clipping its initial value.
        expected_sites: n, the denominator of the mean (``fraction_train`` x the sites).
        delta: the delta the epsilon is stated at.
        clipping: ``fixed`` or ``adaptive`` (Andrew et al. 2021).
        target_quantile: adaptive: the share of updates that should be unclipped, in (0, 1).
        clip_lr: adaptive: the geometric update's learning rate (> 0).
        clipped_count_stddev: adaptive: sigma_b, the noise on the unclipped count; ``None``:
            :func:`default_count_stddev`.
        local_modules: modules the configuration keeps at the sites (FedPer's).
        privacy_file: where the accountant writes each round (``federated/central_privacy.json``).
        rng: the noise and sampling source; ``None``: seeded from the OS, never from the run seed.
        target_epsilon: recorded only: the epsilon ``noise_multiplier`` was sized for, if any.
    """

    hyperparameters: ClassVar[tuple[str, ...]] = ("noise_multiplier", "clipping_norm", "clipping", "expected_sites")
    release_without_replies: ClassVar[bool] = True

    def __init__(
        self,
        inner: ModalityAwareStrategy,
        *,
        noise_multiplier: float,
        clipping_norm: float,
        expected_sites: float,
        delta: float,
        clipping: str = "fixed",
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
        local_modules: Iterable[str] = (),
        privacy_file: str | Path | None = None,
        rng: np.random.Generator | None = None,
        target_epsilon: float | None = None,
    ) -> None:
        if type(inner) is not ModalityAwareFedAvg and not isinstance(inner, ServerOptimiserStrategy):
            raise ValueError(f"central DP wraps only rules of the mean ({', '.join(CENTRAL_DP_STRATEGIES)}); "
                             f"{type(inner).__name__} needs each site's update")  # fmt: skip
        if clipping not in ("fixed", "adaptive"):
            raise ValueError(f"privacy.clipping must be 'fixed' or 'adaptive', got {clipping!r}")
        if not noise_multiplier >= 0 or not clipping_norm > 0 or not expected_sites > 0:
            raise ValueError(f"need noise_multiplier >= 0, clipping_norm > 0 and expected_sites > 0; got "
                             f"{noise_multiplier!r}, {clipping_norm!r}, {expected_sites!r}")  # fmt: skip
        super().__init__(**self.wrapped_kwargs(inner))
        if not 0 < self.fraction_train <= 1:
            raise ValueError(f"central DP samples sites at rate strategy.fraction_train, which must be in (0, 1]; got "
                             f"{self.fraction_train!r}")  # fmt: skip
        self.inner = inner
        self.noise_multiplier = float(noise_multiplier)
        self.clipping_norm = float(clipping_norm)
        self.expected_sites = float(expected_sites)
        self.clipping = clipping
        self.target_quantile = float(target_quantile)
        self.clip_lr = float(clip_lr)
        self.local_modules = tuple(local_modules)
        self.rng = rng if rng is not None else np.random.default_rng()
        if clipping == "adaptive":
            self.count_stddev = float(clipped_count_stddev if clipped_count_stddev is not None else
                                      default_count_stddev(noise_multiplier=noise_multiplier,
                                                           expected_sites=expected_sites))  # fmt: skip
            self.update_noise_multiplier = update_noise_multiplier(self.noise_multiplier, count_stddev=self.count_stddev,
                                                                   expected_sites=expected_sites)  # fmt: skip
        else:
            self.count_stddev = 0.0
            self.update_noise_multiplier = self.noise_multiplier
        self.accountant = CentralAccountant(
            noise_multiplier=self.noise_multiplier, sample_rate=float(self.fraction_train), delta=delta,
            path=None if privacy_file is None else Path(privacy_file),
            settings={"clipping": clipping, "initial_clipping_norm": self.clipping_norm,
                      "update_noise_multiplier": self.update_noise_multiplier, "clipped_count_stddev": self.count_stddev,
                      "target_quantile": self.target_quantile if clipping == "adaptive" else None,
                      "clip_lr": self.clip_lr if clipping == "adaptive" else None, "expected_sites": self.expected_sites,
                      "aggregation": "unweighted sum of clipped updates / expected_sites", "rule": type(inner).__name__,
                      "local_modules": list(self.local_modules), "target_epsilon": target_epsilon},
        )  # fmt: skip
        self._sampled = 0

    def summary(self) -> None:
        log(INFO, "\t├──> client-level DP around %s: z %s (update z %.4g), C %s %s, n %s, q %s, delta %s",
            type(self.inner).__name__, self.noise_multiplier, self.update_noise_multiplier, self.clipping_norm,
            self.clipping, self.expected_sites, self.fraction_train, self.accountant.delta)  # fmt: skip
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Poisson sampling at rate ``fraction_train`` (the accountant's assumption), not
        FedAvg's fixed-size sample; ``min_train_nodes`` cannot be enforced under it."""
        self._global = {k: v.numpy() for k, v in arrays.items()}
        _, nodes = sample_nodes(grid, self.min_available_nodes, 0)
        sampled = poisson_sample(sorted(nodes), rate=float(self.fraction_train), rng=self.rng)
        self._sampled = len(sampled)
        log(INFO, "configure_train: Poisson-sampled %s nodes (out of %s, rate %s)", len(sampled), len(nodes),
            self.fraction_train)  # fmt: skip
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, sampled, MessageType.TRAIN)

    def aggregate(
        self, server_round: int, global_arrays: dict[str, np.ndarray], updates: Sequence[Update]
    ) -> dict[str, np.ndarray]:
        """Clip, noise, account, then the wrapped rule on the noisy mean; runs every round,
        with no replies too (the release is then noise alone, as the analysis assumes)."""
        clipped = [clip_update(global_arrays, arrays, metrics, clipping_norm=self.clipping_norm,
                               weighted_by_key=self.weighted_by_key, local_modules=self.local_modules)
                   for arrays, metrics in updates]  # fmt: skip
        noise_std = compute_stdv(self.update_noise_multiplier, self.clipping_norm, self.expected_sites)
        mean = noisy_mean(global_arrays, [c.delta for c in clipped], noise_std=noise_std,
                          denominator=self.expected_sites, rng=self.rng, local_modules=self.local_modules)  # fmt: skip
        merged = self.inner.aggregate(server_round, global_arrays, [(mean, {self.weighted_by_key: 1.0})])
        used = self.clipping_norm
        if self.clipping == "adaptive":
            self.clipping_norm, _ = adaptive_clipping_norm(
                used, unclipped=[not c.clipped for c in clipped], target_quantile=self.target_quantile,
                lr=self.clip_lr, count_stddev=self.count_stddev, expected_sites=self.expected_sites, rng=self.rng,
            )  # fmt: skip
        self.accountant.step(round=server_round, sampled=self._sampled, aggregated=len(clipped),
                                      clipped=sum(c.clipped for c in clipped), clipping_norm=used, noise_std=noise_std,
                                      next_clipping_norm=self.clipping_norm)  # fmt: skip
        return merged
