"""Settings a site receives with every round: how to train locally and how to personalise.

Plain frozen dataclasses, checked when built, so the ServerApp, the ClientApp and the
simulation's baselines share one definition (:mod:`client.messages` carries them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TrainSettings", "PersonalizationSettings", "PrivacySettings", "PERSONALIZATIONS", "PRIVACY_MODES",
           "ACCOUNTANTS", "GRAD_SAMPLE_MODES", "LABEL_SKEW_MODES", "OPTIMIZERS", "check_label_skew", "dp_refusals"]  # fmt: skip

PERSONALIZATIONS = ("none", "finetune", "fedper", "ditto")
#: which weights each method keeps (:mod:`client.model_selection`, :mod:`server.round_selection`)
SELECTIONS = ("last", "best_val")
PRIVACY_MODES = ("none", "dp")
ACCOUNTANTS = ("rdp", "prv")
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost", "auto")
#: Label-skew modes; what each does is in :mod:`client.label_skew`.
LABEL_SKEW_MODES = ("none", "logit_adjust")
#: Site optimisers: ``adamw`` (decoupled weight decay) or ``sgd`` (heavy-ball momentum).
OPTIMIZERS = ("adamw", "sgd")


def check_label_skew(mode: str) -> str:
    """``mode`` if known, else a ValueError naming ``train.label_skew`` and the options."""
    if mode not in LABEL_SKEW_MODES:
        raise ValueError(f"train.label_skew: unknown {mode!r}; expected one of {list(LABEL_SKEW_MODES)}")
    return mode


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings, identical for federated, pooled and local-only training.

    Args:
        epochs: passes over the local training split per round (fractions allowed).
        batch_size: samples per step.
        lr: learning rate.
        weight_decay: weight decay (decoupled under AdamW).
        proximal_mu: FedProx proximal weight; 0 disables it.
        label_skew: ``none`` or ``logit_adjust`` (see :mod:`client.label_skew`).
        optimizer: ``adamw`` or ``sgd``; a fresh one every round.
        momentum: ``sgd`` only: heavy-ball momentum.
    """

    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    proximal_mu: float = 0.0
    label_skew: str = "none"
    optimizer: str = "adamw"
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_label_skew(self.label_skew)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: unknown {self.optimizer!r}; expected one of {list(OPTIMIZERS)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"train.momentum must be in [0, 1); got {self.momentum}")
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
        select: ``last`` or ``best_val``: which weights ``finetune`` keeps, and with it the
            federation (:mod:`server.round_selection`) and the local-only and pooled baselines
            (:mod:`client.model_selection`); ``fedper`` and ``ditto`` keep their last.
    """

    name: str = "none"
    epochs: float = 1.0
    min_train_positives: int = 10
    keep_modules: tuple[str, ...] = ("fusion",)
    ditto_lambda: float = 0.1
    select: str = "last"

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
        if self.select not in SELECTIONS:
            raise ValueError(f"personalization.select: unknown {self.select!r}; expected one of {list(SELECTIONS)}")
        if self.select != "last" and self.name in ("fedper", "ditto"):
            raise ValueError(f"personalization.select={self.select} applies to finetune (and none: the baselines); "
                             f"{self.name} keeps its last weights")  # fmt: skip


@dataclass(frozen=True)
class PrivacySettings:
    """Sample-level DP-SGD at each site (see :mod:`client.privacy`); ``name="none"`` turns it off.

    Set the noise one of two ways: ``target_epsilon`` for the whole planned run (the noise is
    sized once for ``ceil(plan_rounds * (1 + plan_margin))`` rounds of local steps), or a
    fixed ``noise_multiplier`` with ``budget`` as the stop rule.

    Args:
        name: ``none`` or ``dp``.
        target_epsilon: epsilon of the whole planned run at ``delta``; ``None`` with ``noise_multiplier``.
        noise_multiplier: sigma (noise std over ``max_grad_norm``); ``None`` with ``target_epsilon``.
        max_grad_norm: per-sample clipping bound C (flat L2 norm over every trained parameter).
        delta: ``None``: ``1 / (10 n)`` of each site's training split (below ``1 / n``).
        accountant: ``rdp`` or ``prv`` (Opacus' accountants).
        budget: the site's lifetime epsilon limit; ``None``: ``target_epsilon``. A round that
            would take the site past it is refused.
        plan_margin: extra rounds the noise is sized for, as a fraction of ``plan_rounds``
            (rounds a site runs again after a lost reply or a restart still fit the target).
        plan_rounds: rounds the noise is sized for; ``None``: the run's ``rounds``.
        grad_sample_mode: Opacus' per-sample-gradient mode: ``hooks``, ``functorch``, ``ew``,
            ``ghost`` (ghost clipping: per-row gradient norms without per-row gradients, two
            backward passes; refused on heads with an auxiliary loss), or
            ``auto``: ``ew`` where its per-sample gradients are checked right on the model, else
            ``hooks``, and ``ghost`` where they would pass ``ghost_above_mib`` and ghost
            clipping's norms are checked on the model (:mod:`client.grad_sample_choice`).
        ghost_above_mib: under ``auto``, the size of one expected batch's per-sample
            gradients above which ghost clipping, which never holds them, is preferred.
        ledger_dir: where each site keeps ``<site>/ledger.jsonl``; ``None``: the run folder's
            ``privacy/`` (a deployed site's ``state-dir`` always wins).
    """

    name: str = "none"
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    delta: float | None = None
    accountant: str = "rdp"
    budget: float | None = None
    plan_margin: float = 0.1
    plan_rounds: int | None = None
    grad_sample_mode: str = "hooks"
    ghost_above_mib: float = 2048.0
    ledger_dir: str | None = None

    def __post_init__(self) -> None:
        if self.name not in PRIVACY_MODES:
            raise ValueError(f"privacy.name: unknown {self.name!r}; expected one of {list(PRIVACY_MODES)}")
        if self.name == "none":
            return
        problems = []
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            problems.append("set exactly one of privacy.target_epsilon (for the whole run) and privacy.noise_multiplier "
                            f"(got {self.target_epsilon!r} and {self.noise_multiplier!r})")  # fmt: skip
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            problems.append(f"privacy.target_epsilon must be a finite number > 0 (privacy=none trains without DP); "
                            f"got {self.target_epsilon!r}")  # fmt: skip
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            problems.append(f"privacy.noise_multiplier must be > 0; got {self.noise_multiplier!r}")
        if self.noise_multiplier is not None and self.budget is None:
            problems.append("privacy.noise_multiplier needs privacy.budget, the site's lifetime epsilon limit (the stop rule)")
        if self.budget is not None and not self.budget > 0:
            problems.append(f"privacy.budget must be > 0; got {self.budget!r}")
        if not self.max_grad_norm > 0:
            problems.append(f"privacy.max_grad_norm must be > 0; got {self.max_grad_norm!r}")
        if self.delta is not None and not 0 < self.delta < 1:
            problems.append(f"privacy.delta must be in (0, 1), and below 1 / (site training rows); got {self.delta!r}")
        if self.accountant not in ACCOUNTANTS:
            problems.append(f"privacy.accountant: unknown {self.accountant!r}; expected one of {list(ACCOUNTANTS)}")
        if not self.plan_margin >= 0:
            problems.append(f"privacy.plan_margin must be >= 0; got {self.plan_margin!r}")
        if self.plan_rounds is not None and self.plan_rounds < 1:
            problems.append(f"privacy.plan_rounds must be >= 1; got {self.plan_rounds!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            problems.append(f"privacy.grad_sample_mode: unknown {self.grad_sample_mode!r}; expected one of "
                            f"{list(GRAD_SAMPLE_MODES)}")  # fmt: skip
        if not self.ghost_above_mib > 0:
            problems.append(f"privacy.ghost_above_mib must be > 0 (MiB); got {self.ghost_above_mib!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    @property
    def limit(self) -> float:
        """The lifetime epsilon limit: ``budget``, else ``target_epsilon``."""
        return float(self.budget if self.budget is not None else self.target_epsilon)


def dp_refusals(*, task: str, train: TrainSettings, personalization: PersonalizationSettings | None = None) -> list[str]:
    """Why DP-SGD cannot make this combination private ([] when it can).

    Allowed: modality dropout (per-sample randomness), the heads' and encoders' auxiliary
    losses (each a batch mean of per-sample terms), FedProx's proximal term (added after the
    noise), logit adjustment (its offset is the label counts the statistics round already
    sends), FedPer (kept modules train under DP-SGD) and finetune (through the same DP round).
    """
    problems = []
    if task == "survival":
        problems.append("task survival: the Cox partial likelihood couples the samples of a risk set, so clipping "
                        "per-sample gradients does not bound one patient's influence on the others' terms and no "
                        "epsilon would hold; train survival with privacy=none")  # fmt: skip
    if personalization is not None and personalization.name == "ditto":
        problems.append("personalization=ditto: the personal model trains every round beside the global one, which "
                        "would spend the budget twice a round; use personalization=finetune, fedper or none")  # fmt: skip
    return problems
