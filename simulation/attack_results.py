"""What a membership-inference attack found: AUC and TPR at low FPR per site and pooled,
as the typed records of ``attacks.json`` and the lines the run prints and reports.

A TPR at false-positive rate f is read off scikit-learn's ROC curve at the largest FPR <= f;
it needs at least ``1 / f`` non-members to resolve (with fewer, a single false positive is
already more than f), so it is ``None`` with the reason, never an interpolated figure.
Carlini et al. (2022) argue for these low-FPR figures over accuracy or AUC alone.

References:
    Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
    Principles", IEEE S&P 2022. https://arxiv.org/abs/2112.03570
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["ATTACK_FILE", "FPR_TARGETS", "POOLED", "SCOPE", "AttackReport", "AttackResult", "attack_lines",
           "attack_summary_line", "membership_metrics", "tpr_at_fpr"]  # fmt: skip

ATTACK_FILE = "attacks.json"
SCHEMA_VERSION = 1
POOLED = "pooled"  # the site name of the figures over every site's candidates
SCOPE = ("simulation only: the attacker holds every site's training and held-out rows, to measure what the final "
         "global model leaks; a deployed federation never gathers them")  # fmt: skip
#: (field of AttackResult, false-positive rate)
FPR_TARGETS = (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0_1pct_fpr", 0.001))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> tuple[float | None, str | None]:
    """(TPR at FPR <= ``fpr``, None) from scikit-learn's ROC; (None, why) when the
    non-members are fewer than ``1 / fpr``, so no threshold can reach that rate."""
    n_out = int((~is_member).sum())
    needed = math.ceil(1 / fpr - 1e-9)
    if n_out < needed:
        return None, (f"not resolvable: {n_out} non-members; a TPR at {fpr:.1%} FPR needs >= {needed} "
                      f"(one false positive is {1 / max(n_out, 1):.2%})")  # fmt: skip
    false_pos, true_pos, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return float(true_pos[false_pos <= fpr + 1e-12].max()), None


@dataclass(frozen=True)
class AttackResult:
    """An attack's figures at one site (or pooled over sites).

    Args:
        site: the site, or ``pooled``.
        members: members attacked.
        non_members: non-members attacked.
        auc: ROC AUC of the scores (0.5: chance).
        tpr_at_1pct_fpr: TPR at 1% FPR, or None (see ``unresolved``).
        tpr_at_0_1pct_fpr: TPR at 0.1% FPR, or None (see ``unresolved``).
        unresolved: figure -> why it is None.
    """

    site: str
    members: int
    non_members: int
    auc: float
    tpr_at_1pct_fpr: float | None
    tpr_at_0_1pct_fpr: float | None
    unresolved: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackResult:
        missing = [f for f in ("site", "members", "non_members", "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")
                   if f not in data]  # fmt: skip
        if missing:
            raise ValueError(f"attack result: missing keys {missing}")
        return cls(**data)


def membership_metrics(scores: np.ndarray, is_member: np.ndarray, *, site: str) -> AttackResult:
    """AUC (``roc_auc_score``) and TPR at 1% and 0.1% FPR of membership ``scores``."""
    is_member = np.asarray(is_member, dtype=bool)
    figures, unresolved = {}, {}
    for name, fpr in FPR_TARGETS:
        figures[name], why = tpr_at_fpr(scores, is_member, fpr)
        if why:
            unresolved[name] = why
    return AttackResult(site=site, members=int(is_member.sum()), non_members=int((~is_member).sum()),
                        auc=float(roc_auc_score(is_member, scores)), unresolved=unresolved, **figures)  # fmt: skip


@dataclass(frozen=True)
class AttackReport:
    """``attacks.json``: one attack on one model at every site, and pooled over sites."""

    attack: str
    options: dict[str, Any]
    model: str
    note: str
    sites: list[AttackResult]
    pooled: AttackResult | None
    skipped: dict[str, str] = field(default_factory=dict)
    scope: str = SCOPE
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sites": [s.to_dict() for s in self.sites],
                "pooled": None if self.pooled is None else self.pooled.to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackReport:
        missing = [k for k in ("attack", "options", "model", "note", "sites", "pooled") if k not in data]
        if missing:
            raise ValueError(f"{ATTACK_FILE}: missing keys {missing}")
        if data.get("schema_version") != SCHEMA_VERSION:
            found = data.get("schema_version")
            raise ValueError(f"{ATTACK_FILE}: schema version {found!r}, expected {SCHEMA_VERSION}")
        pooled = None if data["pooled"] is None else AttackResult.from_dict(data["pooled"])
        return cls(**{**data, "sites": [AttackResult.from_dict(s) for s in data["sites"]], "pooled": pooled})


def _figure(value: float | None) -> str:
    return "None" if value is None else f"{value:.3f}"


def attack_lines(report: dict[str, Any] | None) -> list[str]:
    """Markdown lines of ``attacks.json``'s content; [] when no attack ran."""
    if not report:
        return []
    parsed = AttackReport.from_dict(report)
    lines = [(f"Membership inference, attack `{parsed.attack}` against the {parsed.model} ({parsed.note}). "
             f"{parsed.scope[0].upper()}{parsed.scope[1:]}."), "",
             "| site | members | non-members | attack AUC | TPR at 1% FPR | TPR at 0.1% FPR |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    labels = {"tpr_at_1pct_fpr": "TPR at 1% FPR", "tpr_at_0_1pct_fpr": "TPR at 0.1% FPR"}
    unresolved = []
    for row in [*parsed.sites, *([parsed.pooled] if parsed.pooled else [])]:
        lines.append(f"| {row.site} | {row.members} | {row.non_members} | {row.auc:.3f} | "
                     f"{_figure(row.tpr_at_1pct_fpr)} | {_figure(row.tpr_at_0_1pct_fpr)} |")  # fmt: skip
        unresolved += [f"- {row.site}: {labels[name]} is None, {reason}" for name, reason in row.unresolved.items()]
    lines += ["", *unresolved]
    lines += [f"- {site} skipped: {reason}" for site, reason in parsed.skipped.items()]
    return lines


def attack_summary_line(report: dict[str, Any]) -> str:
    """One line for the terminal: the pooled figures and each site's AUC."""
    parsed = AttackReport.from_dict(report)
    if parsed.pooled is None:
        return f"membership inference ({parsed.attack}): no site had members and non-members to attack"
    p = parsed.pooled
    sites = ", ".join(f"{r.site} {r.auc:.3f}" for r in parsed.sites)
    return (f"membership inference ({parsed.attack}, {SCOPE.split(':')[0]}): pooled attack AUC {p.auc:.3f}, "
            f"TPR at 1% FPR {_figure(p.tpr_at_1pct_fpr)}, at 0.1% FPR {_figure(p.tpr_at_0_1pct_fpr)} "
            f"({p.non_members} non-members); per-site AUC: {sites}; {ATTACK_FILE}")  # fmt: skip
