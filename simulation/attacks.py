"""Membership inference against a trained model: how much it says about who trained it.

Simulation only. The attacker here holds every site's rows, so that it can measure leakage:
at each site the *members* are the rows of its training split and the *non-members* its
held-out rows (validation and test), balanced by subsampling the larger side with a seeded
generator. Each attack is a plain function registered by name in :data:`ATTACKS` that gives
one membership score per candidate (higher: more likely a member);
:func:`simulation.attack_results.membership_metrics` scores them with scikit-learn's ROC:
AUC, and the true-positive rate at 1% and 0.1% false positives (``None``, with the reason,
when the non-members are too few to resolve it).

Attacks:
    ``loss``: score = -(per-sample loss of the target) (Yeom et al. 2018).
    ``lira``: the likelihood-ratio attack with shadow models (Carlini et al. 2022), see
    :func:`lira_attack`.

References:
    Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk in Machine Learning: Analyzing the
    Connection to Overfitting", IEEE CSF 2018. https://arxiv.org/abs/1709.01604
    Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks From First
    Principles", IEEE S&P 2022. https://arxiv.org/abs/2112.03570
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.stats import norm

from client.data import SiteDataset
from client.ledger import PrivacyLedger
from client.privacy import BudgetExceeded, SitePrivacy
from client.round import round_seed, train_round
from client.settings import PrivacySettings, TrainSettings
from client.train import make_loader
from fusion_models.model import ModelSpec, build_model
from fusion_models.registry import Registry
from fusion_models.task import Task
from simulation.attack_results import POOLED, AttackReport, membership_metrics
from simulation.attack_settings import ATTACK_TASKS, AttackSettings, check_attack_task
from simulation.baselines import concat_sites

__all__ = ["ATTACKS", "AttackScores", "Candidates", "ShadowTraining", "balanced_keep", "candidates",
           "likelihood_ratio", "lira_attack", "logit_confidence", "loss_attack", "per_sample_loss",
           "run_attacks"]  # fmt: skip

@dataclass(frozen=True)
class ShadowTraining:
    """How the target was trained, so that shadow models train the same way.

    Args:
        spec: the target's model spec.
        train: the run's local training settings.
        rounds: the run's rounds (a shadow trains ``rounds`` rounds of :func:`train_round`).
        seed: the run's seed.
        privacy: the run's privacy settings (shadows train under the same DP-SGD).
    """

    spec: ModelSpec
    train: TrainSettings
    rounds: int
    seed: int
    privacy: PrivacySettings = field(default_factory=PrivacySettings)


@dataclass(frozen=True)
class Candidates:
    """One site's attack set.

    Args:
        site: the site.
        pool: every row of the site (training, validation, test), the shadows' data.
        index: the candidates' rows in ``pool``, members first.
        is_member: per candidate, whether it is in the training split.
    """

    site: str
    pool: SiteDataset
    index: np.ndarray
    is_member: np.ndarray

    @property
    def dataset(self) -> SiteDataset:
        return _rows(self.pool, self.index)


@dataclass(frozen=True)
class AttackScores:
    """Membership scores of the candidates (higher: member), how they were made, and what
    an audit needs to recompute them (``details``: arrays, never written to disk)."""

    scores: np.ndarray
    note: str
    details: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


AttackFn = Callable[..., AttackScores]
#: name -> attack(model, candidates, *, task, training, device, **options) -> AttackScores
ATTACKS: Registry[AttackFn] = Registry("membership-inference attack")

# option -> (test of a valid value, what it must be); each attack reads only its own
def _rows(dataset: SiteDataset, index: np.ndarray) -> SiteDataset:
    positions = torch.as_tensor(np.asarray(index, dtype=np.int64))
    return SiteDataset(inputs={m: t[positions] for m, t in dataset.inputs.items()}, present=dataset.present[positions],
                       target=dataset.target[positions], sample_ids=[dataset.sample_ids[i] for i in index.tolist()],
                       modalities=list(dataset.modalities))  # fmt: skip


def candidates(site: str, train: SiteDataset, held_out: list[SiteDataset], *, seed: int) -> Candidates:
    """Members (``train``) against non-members (``held_out`` rows), the larger side
    subsampled without replacement to the smaller's size with a generator seeded by
    ``seed`` and the site's name."""
    pool = concat_sites([train, *held_out])
    members, others = np.arange(len(train)), np.arange(len(train), len(pool))
    n = min(len(members), len(others))
    rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
    members = np.sort(rng.choice(members, size=n, replace=False))
    others = np.sort(rng.choice(others, size=n, replace=False))
    return Candidates(site=site, pool=pool, index=np.concatenate([members, others]),
                      is_member=np.concatenate([np.ones(n, bool), np.zeros(n, bool)]))  # fmt: skip


@torch.no_grad()
def _outputs(model: torch.nn.Module, dataset: SiteDataset, *, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(raw outputs [N, output_dim], targets) of ``model`` in eval mode (no modality dropout)."""
    model.to(device).eval()
    outs, targets = [], []
    for batch in make_loader(dataset, batch_size=256, shuffle=False, seed=0):
        outs.append(model({k: v.to(device) for k, v in batch.items()}).cpu())
        targets.append(batch["label"])
    if not outs:
        return torch.zeros(0, 1), dataset.target[:0]
    return torch.cat(outs).double(), torch.cat(targets)


def per_sample_loss(model: torch.nn.Module, dataset: SiteDataset, task: Task, *, device: torch.device) -> np.ndarray:
    """The task's training loss of each row on its own, ``[N]``."""
    outputs, target = _outputs(model, dataset, device=device)
    return np.array([float(task.loss(outputs[i : i + 1], target[i : i + 1])) for i in range(len(target))])


def logit_confidence(model: torch.nn.Module, dataset: SiteDataset, task: Task, *, device: torch.device) -> np.ndarray:
    """LiRA's statistic, ``log(p / (1 - p))`` of the true class' probability p, ``[N]``
    (Carlini et al. 2022, Sec. IV-C: logit scaling makes it close to Gaussian).

    Computed from the logits without forming p, so it does not saturate: binary, ``s`` for
    a positive and ``-s`` for a negative (s the logit); multiclass,
    ``z_y - logsumexp(z_j, j != y)``. Regression has no class probability: the statistic is
    the negative squared error.
    """
    outputs, target = _outputs(model, dataset, device=device)
    if task.name == "binary":
        s = outputs[:, 0]
        return torch.where(target.reshape(-1) > 0.5, s, -s).numpy()
    if task.name == "multiclass":
        y = target.long().reshape(-1, 1)
        true = outputs.gather(1, y)[:, 0]
        rest = outputs.scatter(1, y, float("-inf")).logsumexp(dim=1)
        return (true - rest).numpy()
    if task.name == "regression":
        return (-((outputs[:, 0] - target.double().reshape(-1)) ** 2)).numpy()
    raise ValueError(f"attack: task {task.name!r} is not supported; supported: {list(ATTACK_TASKS)}")


@ATTACKS.register("loss")
def loss_attack(model: torch.nn.Module, candidates: Candidates, *, task: Task, training: ShadowTraining,
                device: torch.device) -> AttackScores:  # fmt: skip
    """Loss threshold (Yeom et al. 2018): members tend to have lower loss; score = -loss.

    Args:
        model: the target.
        candidates: the site's members and non-members.
        task: the task (its loss, per row).
        training: unused (the attack needs no shadow models).
        device: where to run the model.
    """
    loss = per_sample_loss(model, candidates.dataset, task, device=device)
    return AttackScores(scores=-loss, note="score = -per-sample loss (Yeom et al. 2018)", details={"loss": loss})


def balanced_keep(n: int, shadows: int, rng: np.random.Generator) -> np.ndarray:
    """``[shadows, n]`` bool: which rows each shadow trains on. Every row is in exactly
    ``shadows // 2`` shadows (Carlini et al.'s construction), so each shadow gets about half."""
    order = rng.random((shadows, n)).argsort(axis=0)
    return order < shadows // 2


def _pooled_std(values: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    """Within-row standard deviation pooled over rows (``values``, ``mask``: ``[K, N]``)."""
    squares = (((values - mean) ** 2) * mask).sum()
    dof = (mask.sum(axis=0) - 1).clip(min=0).sum()
    return float(math.sqrt(max(squares / dof, 1e-12))) if dof > 0 else 1e-6


def likelihood_ratio(target: np.ndarray, shadow: np.ndarray, keep: np.ndarray, *, online: bool) -> np.ndarray:
    """LiRA scores from the statistics of the target and of the shadows.

    Per candidate, the shadows that trained on it (IN) and those that did not (OUT) give the
    means ``mu_in``, ``mu_out``; the variances are pooled over candidates (Carlini et al.'s
    fixed-variance variant, which they recommend for few shadows). Online:
    ``log N(t; mu_in, s_in) - log N(t; mu_out, s_out)``. Offline (OUT only, one-sided):
    ``log Phi((t - mu_out) / s_out)``.

    Args:
        target: the target's statistic per candidate, ``[N]``.
        shadow: each shadow's statistic per candidate, ``[K, N]``.
        keep: whether shadow k trained on candidate i, ``[K, N]``.
        online: use IN and OUT (True) or OUT only.
    """
    keep = keep.astype(bool)
    n_in, n_out = keep.sum(axis=0), (~keep).sum(axis=0)
    if (n_out < 1).any() or (online and (n_in < 1).any()):
        raise ValueError("likelihood_ratio: every candidate needs an OUT shadow (and an IN one online)")
    mu_out = (shadow * ~keep).sum(axis=0) / n_out
    s_out = _pooled_std(shadow, ~keep, mu_out)
    if not online:
        return norm.logcdf((target - mu_out) / s_out)
    mu_in = (shadow * keep).sum(axis=0) / n_in
    s_in = _pooled_std(shadow, keep, mu_in)
    return norm.logpdf(target, mu_in, s_in) - norm.logpdf(target, mu_out, s_out)


def _train_shadow(pool: SiteDataset, task: Task, training: ShadowTraining, *, name: str, device: torch.device,
                  ledger_dir: str) -> torch.nn.Module:  # fmt: skip
    """A model trained as the target's site trains: ``rounds`` rounds of :func:`train_round`,
    under the run's DP-SGD when it has one (a throwaway ledger: no real site's budget)."""
    model = build_model(training.spec, seed=round_seed(training.seed, 0, name))
    private = training.privacy.enabled
    ledger = PrivacyLedger.open(ledger_dir, name) if private else None
    for server_round in range(1, training.rounds + 1):
        dp = SitePrivacy(settings=replace(training.privacy, ledger_dir=ledger_dir), ledger=ledger, run_id="lira-shadow",
                         server_round=server_round, rounds=training.rounds) if private else None  # fmt: skip
        try:
            train_round(model, pool, task, training.train, seed=round_seed(training.seed, server_round, name),
                        device=device, privacy=dp)  # fmt: skip
        except BudgetExceeded:  # as a site stops at its budget
            break
    return model


@ATTACKS.register("lira")
def lira_attack(model: torch.nn.Module, candidates: Candidates, *, task: Task, training: ShadowTraining,
                device: torch.device, shadows: int = 4, mode: str = "auto") -> AttackScores:  # fmt: skip
    """Likelihood-ratio attack, LiRA (Carlini et al. 2022), with ``shadows`` shadow models.

    Each shadow trains through :func:`client.round.train_round` with the target's model spec,
    training settings, rounds and DP-SGD, on a random half of the site's rows (members and
    non-members pooled; every row in exactly ``shadows // 2`` shadows). Statistic: the
    logit-scaled confidence (:func:`logit_confidence`). Scores: :func:`likelihood_ratio`.

    Approximations, said plainly: a shadow trains at the site alone, while the target was
    also averaged with the other sites' updates, so the shadows memorise at least as much
    as the target; no query augmentation.

    Args:
        model: the target.
        candidates: the site's members and non-members.
        task: the task.
        training: how the target was trained.
        device: where to train and run the models.
        shadows: K >= 3 shadow models.
        mode: ``online`` (IN and OUT, needs K >= 4: two of each per row), ``offline`` (OUT
            only), or ``auto`` (online when K allows).
    """
    online = shadows // 2 >= 2 if mode == "auto" else mode == "online"
    if online and shadows // 2 < 2:
        raise ValueError(f"attack.mode=online needs attack.shadows >= 4 (two IN and two OUT shadows per row), got "
                         f"{shadows}; set attack.shadows=4 or attack.mode=offline")  # fmt: skip
    rng = np.random.default_rng([training.seed, zlib.crc32(candidates.site.encode()), 1])
    keep = balanced_keep(len(candidates.pool), shadows, rng)
    dataset = candidates.dataset
    statistics = []
    with tempfile.TemporaryDirectory(prefix="lira-ledgers-") as ledger_dir:
        for k in range(shadows):
            subset = _rows(candidates.pool, np.flatnonzero(keep[k]))
            shadow = _train_shadow(subset, task, training, name=f"{candidates.site}-shadow-{k}", device=device,
                                   ledger_dir=ledger_dir)  # fmt: skip
            statistics.append(logit_confidence(shadow, dataset, task, device=device))
    shadow_stats, shadow_keep = np.stack(statistics), keep[:, candidates.index]
    target = logit_confidence(model, dataset, task, device=device)
    scores = likelihood_ratio(target, shadow_stats, shadow_keep, online=online)
    how = (f"online (IN and OUT, {shadows // 2} IN and {shadows - shadows // 2} OUT shadows per row)" if online
           else f"offline (OUT only, {shadows - shadows // 2} OUT shadows per row)")  # fmt: skip
    note = (f"LiRA {how}, {shadows} shadows trained at the site alone as the target's sites train"
            f"{' (DP-SGD as the run)' if training.privacy.enabled else ''}; logit-scaled confidence, variance pooled "
            f"over rows (Carlini et al. 2022)")  # fmt: skip
    details = {"target": target, "shadow": shadow_stats, "keep": shadow_keep, "pool_keep": keep}
    return AttackScores(scores=scores, note=note, details=details)


def run_attacks(settings: AttackSettings, model: torch.nn.Module, data: dict[str, dict[str, SiteDataset]], task: Task,
                *, training: ShadowTraining, device: torch.device, model_name: str) -> AttackReport:  # fmt: skip
    """Attack ``model`` at every site of ``data`` (split -> site -> rows), and pooled.

    The pooled figures rank every site's candidates together (each site balanced, so the
    pool is too).
    """
    check_attack_task(settings, task.name)
    fn = ATTACKS.get(settings.name)
    results, skipped, scores, members, notes = [], {}, [], [], set()
    for site, train in data["train"].items():
        held_out = [data[split][site] for split in ("val", "test") if site in data.get(split, {})]
        chosen = candidates(site, train, held_out, seed=training.seed)
        if len(chosen.index) == 0:
            skipped[site] = f"{len(train)} training and {sum(map(len, held_out))} held-out rows: nothing to balance"
            continue
        out = fn(model, chosen, task=task, training=training, device=device, **settings.options)
        results.append(membership_metrics(out.scores, chosen.is_member, site=site))
        scores.append(out.scores)
        members.append(chosen.is_member)
        notes.add(out.note)
    pooled = membership_metrics(np.concatenate(scores), np.concatenate(members), site=POOLED) if scores else None
    return AttackReport(attack=settings.name, options=dict(settings.options), model=model_name,
                        note="; ".join(sorted(notes)), sites=results, pooled=pooled, skipped=skipped)  # fmt: skip
