"""The server's own (epsilon, delta) for client-level DP (``privacy=central_dp``): one
sampled Gaussian mechanism per round, composed with Opacus' RDP accountant, and the
per-round record the run writes to ``federated/central_privacy.json``.

The unit of privacy is a whole site: its every record, in every round. Each round the server
releases ``global + (sum of clipped site updates + N(0, (z C)^2)) / n`` with sites sampled
independently at rate ``q`` (Poisson sampling, as the accountant assumes), so the round is the
sampled Gaussian mechanism with noise multiplier ``z`` and sample rate ``q``; under adaptive
clipping ``z`` is the effective multiplier of the update and the unclipped-count queries
together (Andrew et al. 2021, Theorem 1). The accountant takes one step per round.

References:
    McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models", ICLR,
    https://arxiv.org/abs/1710.06963
    Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", NeurIPS,
    https://arxiv.org/abs/1905.03871
    Mironov et al. 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism",
    https://arxiv.org/abs/1908.10530
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common.logger import log

from client.atomic_io import atomic_write_text

__all__ = ["CENTRAL_PRIVACY_FILE", "SCHEMA_VERSION", "CentralAccountant", "CentralRound", "noise_for_target"]

CENTRAL_PRIVACY_FILE = "central_privacy.json"
SCHEMA_VERSION = 1


def noise_for_target(target_epsilon: float, *, delta: float, sample_rate: float, rounds: int) -> float:
    """The smallest noise multiplier z whose epsilon after ``rounds`` rounds (one sampled
    Gaussian step each, rate ``sample_rate``) is at most ``target_epsilon`` at ``delta``, with
    the RDP accountant the run's epsilon is then computed with (Opacus' ``get_noise_multiplier``)."""
    if not rounds >= 1:
        raise ValueError(f"rounds must be >= 1 to size the noise for a target epsilon, got {rounds!r}")
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=rounds, accountant="rdp", epsilon_tolerance=0.005))  # fmt: skip


@dataclass(frozen=True)
class CentralRound:
    """What one round of client-level DP released, and the epsilon after it.

    Args:
        round: the server round.
        sampled: sites the round asked to train (Poisson-sampled at rate q).
        aggregated: sites whose clipped update went into the sum.
        clipped: of those, the updates whose norm exceeded ``clipping_norm`` (scaled down to it).
        clipping_norm: C of this round (the bound every update was clipped to).
        noise_std: std of the Gaussian noise on each coordinate of the mean, ``z_update C / n``.
        next_clipping_norm: C of the next round (equal to ``clipping_norm`` under fixed clipping).
        epsilon: the run's epsilon at ``delta`` after this round (``None``: infinite, sigma 0).
    """

    round: int
    sampled: int
    aggregated: int
    clipped: int
    clipping_norm: float
    noise_std: float
    next_clipping_norm: float
    epsilon: float | None


@dataclass
class CentralAccountant:
    """Composes the server's rounds with Opacus' RDP accountant and writes them, atomically,
    to ``path`` after every round (``None``: kept in memory only).

    Args:
        noise_multiplier: z, the effective noise multiplier the accounting uses.
        sample_rate: q, each site's chance of being sampled in a round (``fraction_train``).
        delta: the delta the epsilon is stated at.
        path: the JSON file to write (``federated/central_privacy.json`` in a run).
        settings: what else the file should say about the mechanism (clipping, n, ...).
    """

    noise_multiplier: float
    sample_rate: float
    delta: float
    path: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    rounds: list[CentralRound] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        from opacus.accountants import RDPAccountant  # lazily: the ServerApp of a run without DP skips Opacus

        self._accountant = RDPAccountant()

    def epsilon(self) -> float | None:
        """Epsilon at ``delta`` over every round so far; ``None`` when it is infinite (z = 0)."""
        if self.noise_multiplier == 0:
            return None if self.rounds else 0.0
        if not self._accountant.history:
            return 0.0
        value = float(self._accountant.get_epsilon(delta=self.delta))
        return value if math.isfinite(value) else None

    def step(self, **released: Any) -> CentralRound:
        """Account one round and record it; ``released`` are :class:`CentralRound`'s fields
        but ``epsilon``. Returns the round's record (written to ``path`` before returning)."""
        if self.noise_multiplier > 0:
            self._accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        epsilon = self.epsilon() if self.noise_multiplier > 0 else None
        record = CentralRound(**released, epsilon=epsilon)
        self.rounds.append(record)
        log(INFO, "round %s: client-level DP epsilon %s at delta %.3g (C %.4g, %d sites, %d clipped)", record.round,
            "inf" if epsilon is None else f"{epsilon:.4f}", self.delta, record.clipping_norm, record.aggregated,
            record.clipped)  # fmt: skip
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1))
        return record

    def to_dict(self) -> dict[str, Any]:
        """The file's content: the mechanism, the accountant's history, and every round."""
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "client-level DP (sampled Gaussian mechanism per round, Poisson sampling of sites)",
            "accountant": "rdp",
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
            "epsilon": self.epsilon(),
            "settings": dict(self.settings),
            "history": [list(entry) for entry in self._accountant.history],
            "rounds": [asdict(r) for r in self.rounds],
        }
