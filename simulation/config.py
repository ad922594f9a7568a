"""The composed Hydra config, checked once into typed settings; nothing deeper reads ``cfg``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from client.settings import PRIVACY_MODES
from server.default_config import check_values, resolve_config
from server.settings import CENTRAL_DP, RunSettings
from simulation.attack_settings import AttackSettings

__all__ = ["SimulationConfig", "BASELINES"]

BASELINES = ("pooled", "local")


@dataclass(frozen=True)
class SimulationConfig:
    """One simulation: where the data comes from, how it is carved into sites, and the run."""

    name: str
    dataset: str
    data_root: str | None
    data_params: dict[str, Any]
    partition: str
    partition_params: dict[str, Any]
    val_fraction: float
    test_fraction: float
    baselines: tuple[str, ...]
    repeats: int
    privacy: str
    max_samples: int | None
    run: RunSettings
    attack: AttackSettings = field(default_factory=AttackSettings)  # membership inference after the run
    resolved: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg: DictConfig, *, overrides: list[str] | None = None) -> "SimulationConfig":
        """Check the composed config; errors name the offending key and what it expects.

        Args:
            cfg: the composed Hydra config.
            overrides: the command line's overrides; when given, each overridden value must
                have the kind its YAML default has, and each appended key must exist.
        """
        resolved = resolve_config(cfg)
        if overrides is not None:
            check_values(resolved, overrides)
        _check_ranges(resolved)
        baselines = tuple(resolved.get("baselines") or ())
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"baselines: unknown {unknown}; known: {list(BASELINES)}")
        partition = dict(resolved["partition"])
        privacy = dict(resolved["privacy"])
        if privacy.get("name") not in (*PRIVACY_MODES, CENTRAL_DP):
            raise ValueError(f"privacy={privacy.get('name')!r} is not available; known: {[*PRIVACY_MODES, CENTRAL_DP]}")
        run = RunSettings.from_config(resolved)
        repeats = resolved.get("repeats", 1)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats: expected an integer >= 1, got {repeats!r}")
        return cls(
            name=str(resolved["name"]),
            dataset=str(resolved["data"]["name"]),
            data_root=resolved["data"].get("root"),
            data_params=dict(resolved["data"].get("params") or {}),
            partition=str(partition.pop("name")),
            partition_params={k: v for k, v in partition.items() if v is not None},
            val_fraction=float(resolved["split"]["val_fraction"]),
            test_fraction=float(resolved["split"]["test_fraction"]),
            baselines=baselines,
            repeats=repeats,
            privacy=str(privacy["name"]),
            max_samples=None if resolved.get("max_samples") is None else int(resolved["max_samples"]),
            run=run,
            attack=AttackSettings.from_config(resolved.get("attack")),
            resolved=resolved,
        )


def _check_ranges(resolved: dict[str, Any]) -> None:
    """Values of the right kind but outside what the run can use, all named at once."""
    problems = []
    split = resolved.get("split") or {}
    for key in ("val_fraction", "test_fraction"):
        value = split.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
            problems.append(f"split.{key}: expected a number in (0, 1), got {value!r}")
    if not problems and split["val_fraction"] + split["test_fraction"] >= 1:
        problems.append(f"split.val_fraction + split.test_fraction must be < 1 (training needs rows), got "
                        f"{split['val_fraction']} + {split['test_fraction']}")  # fmt: skip
    max_samples = resolved.get("max_samples")
    whole = isinstance(max_samples, int) and not isinstance(max_samples, bool)
    if max_samples is not None and not (whole and max_samples >= 1):
        problems.append(f"max_samples: expected an integer >= 1, or null for all samples, got {max_samples!r}")
    if problems:
        raise ValueError("; ".join(problems))
