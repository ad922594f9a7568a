"""Typed settings of one federated run, checked once from the composed Hydra config and sent
to the ServerApp through Flower's run config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from client.train import TrainSettings

__all__ = ["RunSettings", "ModelSettings", "StrategySettings"]


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


@dataclass(frozen=True)
class StrategySettings:
    """Which strategy aggregates, and how many sites take part in each round."""

    name: str = "fedavg"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_nodes: int = 2
    proximal_mu: float = 0.0


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
        settings = _build(cls, data, "run settings")
        if settings.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {settings.rounds}")
        if settings.strategy.name == "fedprox" and settings.strategy.proximal_mu <= 0:
            raise ValueError("strategy=fedprox needs strategy.proximal_mu > 0 (0 is plain FedAvg)")
        return settings

    @classmethod
    def from_json(cls, text: str) -> "RunSettings":
        return cls.from_dict(json.loads(text))
