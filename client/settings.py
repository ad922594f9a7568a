"""Settings a site receives with every round: how to train locally and how to personalise.

Plain frozen dataclasses, checked when built, so the ServerApp, the ClientApp and the
simulation's baselines share one definition (:mod:`client.messages` carries them).
"""

from __future__ import annotations

from dataclasses import dataclass

from client.label_skew import check_label_skew

__all__ = ["TrainSettings", "PersonalizationSettings", "PERSONALIZATIONS"]

PERSONALIZATIONS = ("none", "finetune", "fedper", "ditto")


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings, identical for federated, pooled and local-only training.

    Args:
        epochs: passes over the local training split per round (fractions allowed).
        batch_size: samples per step.
        lr: learning rate.
        weight_decay: decoupled weight decay (AdamW).
        proximal_mu: FedProx proximal weight; 0 disables it.
        label_skew: ``none`` or ``logit_adjust`` (see :mod:`client.label_skew`).
    """

    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    proximal_mu: float = 0.0
    label_skew: str = "none"

    def __post_init__(self) -> None:
        check_label_skew(self.label_skew)
        if not self.epochs > 0:
            raise ValueError(f"train.epochs must be > 0; got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1; got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0; got {self.lr}")


@dataclass(frozen=True)
class PersonalizationSettings:
    """How a site derives its own model (see :mod:`client.personalization`).

    Args:
        name: ``none``, ``finetune``, ``fedper`` or ``ditto``.
        epochs: local passes of ``finetune`` over the site's training split.
        min_train_positives: ``finetune`` only: sites with fewer training positives (binary)
            or events (survival) keep the global model; 0 applies fine-tuning everywhere.
        keep_modules: ``fedper``: modules that stay at the site and are never sent
            (``fusion`` or ``encoders.<modality>``).
        ditto_lambda: ``ditto``: weight of the pull of the personal model towards the global one.
    """

    name: str = "none"
    epochs: float = 1.0
    min_train_positives: int = 10
    keep_modules: tuple[str, ...] = ("fusion",)
    ditto_lambda: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_modules", tuple(self.keep_modules))
        if self.name not in PERSONALIZATIONS:
            raise ValueError(f"personalization.name: unknown {self.name!r}; expected one of {list(PERSONALIZATIONS)}")
        if not self.epochs > 0:
            raise ValueError(f"personalization.epochs must be > 0; got {self.epochs}")
        if self.min_train_positives < 0:
            raise ValueError(f"personalization.min_train_positives must be >= 0; got {self.min_train_positives}")
        bad = [m for m in self.keep_modules if m != "fusion" and not m.startswith("encoders.")]
        if bad or (self.name == "fedper" and not self.keep_modules):
            raise ValueError(f"personalization.keep_modules: expected 'fusion' or 'encoders.<modality>' names, got "
                             f"{list(self.keep_modules)}")  # fmt: skip
        if not self.ditto_lambda > 0:
            raise ValueError(f"personalization.ditto_lambda must be > 0; got {self.ditto_lambda}")
