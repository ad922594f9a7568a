"""Typed settings of one federated run, checked once from the composed Hydra config and sent
to the ServerApp through Flower's run config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from client.privacy import dp_refusals
from client.settings import PersonalizationSettings, PrivacySettings, TrainSettings

__all__ = ["RunSettings", "ModelSettings", "StrategySettings"]


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
        settings = _build(cls, data, "run settings")
        if settings.privacy.enabled:
            problems = dp_refusals(task=settings.task, train=settings.train, personalization=settings.personalization)
            if problems:
                raise ValueError("privacy=dp: " + "; ".join(problems))
        if settings.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {settings.rounds}")
        if settings.strategy.name == "fedprox" and settings.strategy.proximal_mu <= 0:
            raise ValueError("strategy=fedprox needs strategy.proximal_mu > 0 (0 is plain FedAvg)")
        return settings

    @classmethod
    def from_config(cls, resolved: dict[str, Any]) -> "RunSettings":
        """The run settings of a composed, resolved Hydra config (``configs/config.yaml``)."""
        model = {k: v for k, v in dict(resolved["model"]).items() if k != "encoders"}
        model["encoders"] = {modality: dict(options) for modality, options in (resolved.get("encoder") or {}).items()}
        model["fusion"] = dict(resolved["fusion"])
        personalization = dict(resolved.get("personalization") or {})
        privacy = dict(resolved.get("privacy") or {})
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
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "RunSettings":
        return cls.from_dict(json.loads(text))
