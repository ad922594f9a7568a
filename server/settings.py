"""Typed settings of one federated run, checked once from the composed Hydra config and sent
to the ServerApp through Flower's run config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from client.settings import PersonalizationSettings, PrivacySettings, TrainSettings, dp_refusals

__all__ = ["CENTRAL_DP", "SECAGGPLUS", "SECURE_STRATEGIES", "CentralDPSettings", "ModelSettings", "RunSettings",
           "SecureAggregationSettings", "StrategySettings"]

#: The ``privacy`` option of client-level DP on the server (``configs/privacy/central_dp.yaml``).
CENTRAL_DP = "central_dp"


def _integer(resolved: dict[str, Any], key: str) -> int:
    value = resolved.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}: expected an integer, got {value!r}") from None


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class ModelSettings:
    """Encoders per modality, the fusion head, feature width and modality dropout."""

    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=lambda: {"name": "concat"})
    feature_dim: int = 64
    modality_dropout: float = 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# field -> (test of a valid value, the expected range as the error states it)
_STRATEGY_CHECKS: dict[str, tuple[Any, str]] = {
    "fraction_train": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "fraction_evaluate": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "min_nodes": (lambda v: _is_count(v) and v >= 1, "an integer >= 1"),
    "proximal_mu": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "server_lr": (lambda v: v is None or (_is_number(v) and v > 0), "a number > 0, or null for the strategy's default"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_1": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_2": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "tau": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trim_fraction": (lambda v: _is_number(v) and 0 <= v < 0.5, "a number in [0, 0.5) (0.5 would trim every value)"),
    "num_malicious": (lambda v: _is_count(v) and v >= 0, "an integer >= 0"),
    "num_selected": (lambda v: _is_count(v) and v >= 0, "an integer >= 0 (0: n - num_malicious)"),
}


@dataclass(frozen=True)
class StrategySettings:
    """Which strategy aggregates, how many sites take part in each round, and the rule's
    hyper-parameters (each strategy reads only its own; ``configs/strategy/<name>.yaml``
    sets them per strategy).

    Args:
        name: a name registered in ``server.strategies.STRATEGIES``.
        fraction_train: share of the connected sites sampled for training, in [0, 1].
        fraction_evaluate: share sampled for evaluation, in [0, 1].
        min_nodes: fewest sites per round (capped at the sites connected).
        proximal_mu: FedProx's proximal weight, applied at the sites (>= 0).
        server_lr: server learning rate of FedAvgM/FedAdam/FedYogi/FedAdagrad (> 0);
            ``None`` takes the strategy's default: 1.0, 0.01, 0.01, 0.1.
        momentum: FedAvgM's server momentum, in [0, 1) (Hsu et al. 2019 use 0.9).
        beta_1: first-moment decay of FedAdam/FedYogi/FedAdagrad, in [0, 1).
        beta_2: second-moment decay of FedAdam/FedYogi, in [0, 1).
        tau: adaptivity of FedAdam/FedYogi/FedAdagrad (> 0; Reddi et al. 2021 use 1e-3).
        trim_fraction: share cut from each side by trimmed_mean, in [0, 0.5); floor(f n) values
            go, so 0.25 trims one site per side for 4 to 7 senders and none below 4.
        num_malicious: f, the Byzantine sites Krum/Multi-Krum tolerate (>= 0); a module
            needs more than 2 f + 2 senders, else it gets the weighted average.
        num_selected: m, the sites Multi-Krum averages (0: n - f per module).
    """

    name: str = "fedavg"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_nodes: int = 2
    proximal_mu: float = 0.0
    server_lr: float | None = None
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    trim_fraction: float = 0.25
    num_malicious: int = 0
    num_selected: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"strategy.{key} must be {expected}, got {getattr(self, key)!r}"
            for key, (valid, expected) in _STRATEGY_CHECKS.items()
            if not valid(getattr(self, key))
        ]
        # Imported here: server.strategies imports this module for the type.
        from server.strategies.registry import STRATEGIES

        if self.name not in STRATEGIES:
            problems.insert(0, f"strategy.name must be one of {STRATEGIES.names()}, got {self.name!r}")
        if problems:
            raise ValueError("; ".join(problems))


# field -> (test of a valid value, the expected range as the error states it)
_CENTRAL_DP_CHECKS: dict[str, tuple[Any, str]] = {
    "noise_multiplier": (lambda v: _is_number(v) and v > 0,
                         "a number > 0 (0 would release the clipped mean with no noise: epsilon infinite)"),
    "clipping_norm": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "clipping": (lambda v: v in ("fixed", "adaptive"), "'fixed' or 'adaptive'"),
    "target_quantile": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "clip_lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "clipped_count_stddev": (lambda v: v is None or (_is_number(v) and v > 0),
                             "a number > 0, or null for max(n / 20, noise_multiplier)"),
    "delta": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1), below 1 / (number of sites)"),
    "target_epsilon": (lambda v: v is None or (_is_number(v) and v > 0),
                       "a number > 0, or null to use privacy.noise_multiplier as given"),
}


@dataclass(frozen=True)
class CentralDPSettings:
    """Client-level DP on the server (``privacy=central_dp``, see
    :mod:`server.strategies.central_dp`); ``name="none"`` turns it off.

    Args:
        name: ``none`` or ``central_dp``.
        noise_multiplier: z, the noise std on the sum of clipped site updates over C; under
            adaptive clipping the effective z of the update and count queries together.
        clipping_norm: C, the bound on each site's update (L2 over every key it sent); under
            adaptive clipping its initial value.
        clipping: ``fixed`` or ``adaptive`` (Andrew et al. 2021).
        target_quantile: adaptive: the share of site updates that should be unclipped.
        clip_lr: adaptive: the learning rate of the geometric update of C.
        clipped_count_stddev: adaptive: sigma_b, the noise on the unclipped count; ``None``:
            ``max(n / 20, noise_multiplier)`` with n the expected sites per round.
        delta: the delta of the server's epsilon (a site is the unit: below 1 / sites).
        target_epsilon: the server's epsilon for the planned run; set, it replaces
            ``noise_multiplier`` by the smallest z whose RDP epsilon after ``rounds`` rounds at
            rate ``strategy.fraction_train`` stays within it
            (:func:`server.central_accounting.noise_for_target`).
    """

    name: str = "none"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    clipping: str = "fixed"
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clipped_count_stddev: float | None = None
    delta: float = 1e-5
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ("none", CENTRAL_DP):
            raise ValueError(f"privacy.name: expected {CENTRAL_DP!r} here, got {self.name!r}")
        problems = [
            f"privacy.{key} must be {expected}, got {getattr(self, key)!r}"
            for key, (valid, expected) in _CENTRAL_DP_CHECKS.items()
            if not valid(getattr(self, key))
        ]
        adaptive = (not problems and self.clipping == "adaptive" and self.clipped_count_stddev is not None
                    and self.target_epsilon is None)  # with a target, z is known only at the start: checked then
        if adaptive and not self.noise_multiplier < 2 * self.clipped_count_stddev:
            problems.append(f"privacy.clipped_count_stddev must be > privacy.noise_multiplier / 2 = "
                            f"{self.noise_multiplier / 2:g} for adaptive clipping (Andrew et al. 2021, Theorem 1), "
                            f"got {self.clipped_count_stddev!r}; raise it or leave it null")  # fmt: skip
        if problems:
            raise ValueError("privacy=central_dp: " + "; ".join(problems))

    @property
    def enabled(self) -> bool:
        return self.name == CENTRAL_DP


#: The ``secure_aggregation`` option that runs SecAgg+ (``configs/secure_aggregation/secaggplus.yaml``).
SECAGGPLUS = "secaggplus"
#: Strategy names whose rule is a function of the mean alone, so it can run on SecAgg+'s sum
#: (``server.strategies.secure_aggregation`` checks the same list).
SECURE_STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


def _is_share(value: Any) -> bool:
    """SecAgg+'s convention: an integer count (> 2) or a float share in (0, 1]."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value > 2) or (isinstance(value, float) and 0 < value <= 1)


_SECURE_CHECKS: dict[str, tuple[Any, str]] = {
    "num_shares": (_is_share, "an integer > 2 or a share of the sampled sites in (0, 1]"),
    "reconstruction_threshold": (lambda v: _is_share(v) or v == 2,
                                 "an integer >= 2 or a share of num_shares in (0, 1]"),
    "clipping_range": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "quantization_range": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v < 2**32,
                           "an integer in [2, 2**32)"),
    "timeout_s": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0, or null for no limit"),
}


@dataclass(frozen=True)
class SecureAggregationSettings:
    """Flower's SecAgg+ around each round's training (``secure_aggregation=secaggplus``).

    Args:
        name: ``none`` or ``secaggplus``.
        num_shares: key shares per site (an integer), or a share of the sampled sites.
        reconstruction_threshold: shares needed to unmask a site (an integer), or a share of
            ``num_shares``; fewer surviving sites than this halts the round.
        clipping_range: each coordinate of a site's weighted update is clipped to this range
            before quantisation; a site whose update would be clipped refuses to send it.
        quantization_range: integer levels over ``[-clipping_range, clipping_range]``.
        timeout_s: how long the server waits for each stage's replies.
    """

    name: str = "none"
    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.67
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    timeout_s: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.name not in ("none", SECAGGPLUS):
            raise ValueError(f"secure_aggregation.name: expected 'none' or {SECAGGPLUS!r}, got {self.name!r}")
        problems = [f"secure_aggregation.{key} must be {expected}, got {getattr(self, key)!r}"
                    for key, (valid, expected) in _SECURE_CHECKS.items() if not valid(getattr(self, key))]  # fmt: skip
        if problems:
            raise ValueError("secure_aggregation=secaggplus: " + "; ".join(problems))

    @property
    def enabled(self) -> bool:
        return self.name == SECAGGPLUS


@dataclass(frozen=True)
class RunSettings:
    """Everything the ServerApp needs; sites get their share per round in a ConfigRecord."""

    rounds: int
    seed: int
    task: str
    num_sites: int
    train: TrainSettings
    model: ModelSettings
    strategy: StrategySettings
    device: str = "auto"
    personalization: PersonalizationSettings = field(default_factory=PersonalizationSettings)
    bootstrap: int = 200  # resamples behind each site's confidence intervals
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    central_privacy: CentralDPSettings = field(default_factory=CentralDPSettings)
    secure_aggregation: SecureAggregationSettings = field(default_factory=SecureAggregationSettings)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSettings":
        data = dict(data)
        for key in ("rounds", "seed", "task", "num_sites", "train", "model", "strategy"):
            if key not in data:
                raise ValueError(f"run settings: missing key {key!r}")
        data["train"] = _build(TrainSettings, data["train"], "train settings")
        data["model"] = _build(ModelSettings, data["model"], "model settings")
        data["strategy"] = _build(StrategySettings, data["strategy"], "strategy settings")
        data["personalization"] = _build(PersonalizationSettings, data.get("personalization", {}), "personalization settings")
        data["privacy"] = _build(PrivacySettings, data.get("privacy", {}), "privacy settings")
        data["central_privacy"] = _build(CentralDPSettings, data.get("central_privacy", {}), "privacy settings")
        data["secure_aggregation"] = _build(SecureAggregationSettings, data.get("secure_aggregation", {}),
                                            "secure_aggregation settings")  # fmt: skip
        settings = _build(cls, data, "run settings")
        if settings.secure_aggregation.enabled:
            settings._check_secure_aggregation()
        if settings.central_privacy.enabled:
            settings._check_central_dp()
        if settings.privacy.enabled:
            problems = dp_refusals(task=settings.task, train=settings.train, personalization=settings.personalization)
            if problems:
                raise ValueError("privacy=dp: " + "; ".join(problems))
        if settings.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {settings.rounds}")
        if settings.strategy.name == "fedprox" and settings.strategy.proximal_mu <= 0:
            raise ValueError("strategy=fedprox needs strategy.proximal_mu > 0 (0 is plain FedAvg)")
        return settings

    def _check_central_dp(self) -> None:
        # Imported here: server.strategies imports this module for the type.
        from server.strategies.central_dp import CENTRAL_DP_STRATEGIES

        problems = []
        if self.privacy.enabled:
            problems.append("sample-level DP-SGD (privacy=dp) and client-level DP (privacy=central_dp) cannot run "
                            "together in this build: each has its own accounting and unit of privacy; choose one")  # fmt: skip
        if self.strategy.name not in CENTRAL_DP_STRATEGIES:
            problems.append(f"strategy={self.strategy.name} needs each site's update, but central DP releases only the "
                            f"noisy mean; use one of {list(CENTRAL_DP_STRATEGIES)}")  # fmt: skip
        if not self.strategy.fraction_train > 0:
            problems.append("strategy.fraction_train must be > 0: it is the rate at which central DP samples the sites")
        if not self.central_privacy.delta < 1.0 / max(self.num_sites, 1):
            problems.append(f"privacy.delta must be below 1 / num_sites = {1.0 / max(self.num_sites, 1):g} (a site is "
                            f"the unit of privacy), got {self.central_privacy.delta!r}")  # fmt: skip
        if problems:
            raise ValueError("privacy=central_dp: " + "; ".join(problems))

    def _check_secure_aggregation(self) -> None:
        problems = []
        if self.strategy.name not in SECURE_STRATEGIES:
            problems.append(f"strategy={self.strategy.name} needs each site's update, but SecAgg+ gives the server only "
                            f"their sum; use one of {list(SECURE_STRATEGIES)} (every fusion head works with them)")  # fmt: skip
        if self.central_privacy.enabled:
            problems.append("privacy=central_dp clips each site's update at the server, which SecAgg+ hides; use "
                            "privacy=dp (DP-SGD at the sites) with secure aggregation, or drop one of the two")  # fmt: skip
        if self.num_sites < 2:
            problems.append(f"SecAgg+ needs at least 2 sites per round, got num_sites={self.num_sites}")
        if problems:
            raise ValueError("secure_aggregation=secaggplus: " + "; ".join(problems))

    @classmethod
    def from_config(cls, resolved: dict[str, Any]) -> "RunSettings":
        """The run settings of a composed, resolved Hydra config (``configs/config.yaml``).

        ``privacy=central_dp`` fills ``central_privacy`` (sites then train without DP-SGD);
        ``secure_aggregation=secaggplus`` fills ``secure_aggregation``.
        """
        model = {k: v for k, v in dict(resolved["model"]).items() if k != "encoders"}
        model["encoders"] = {modality: dict(options) for modality, options in (resolved.get("encoder") or {}).items()}
        model["fusion"] = dict(resolved["fusion"])
        personalization = dict(resolved.get("personalization") or {})
        privacy = dict(resolved.get("privacy") or {})
        # this privacy mode's defaults of train.lr, train.batch_size, personalization.epochs (the configs read them)
        for key in ("lr", "batch_size", "finetune_epochs"):
            privacy.pop(key, None)
        central_privacy: dict[str, Any] = {}
        if privacy.get("name") == CENTRAL_DP:
            central_privacy, privacy = privacy, {}
        return cls.from_dict(
            {
                "rounds": _integer(resolved, "rounds"),
                "seed": _integer(resolved, "seed"),
                "task": str(resolved["task"]["name"]),
                "num_sites": _integer(resolved, "num_sites"),
                "train": dict(resolved["train"]),
                "model": model,
                "strategy": dict(resolved["strategy"]),
                "device": str(resolved["device"]),
                "personalization": personalization,
                "bootstrap": _integer(resolved, "bootstrap"),
                "privacy": privacy,
                "central_privacy": central_privacy,
                "secure_aggregation": dict(resolved.get("secure_aggregation") or {}),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "RunSettings":
        return cls.from_dict(json.loads(text))
