"""One site, one round: the single training function every party uses.

The ClientApp, the pooled and local-only baselines and the benchmarks all train through
:func:`train_round`, so whatever a round does (label-skew adjustment, FedProx, DP-SGD with
the site's privacy ledger, and later update checks) cannot be skipped by any of them. It returns exactly what a site
sends back: the modules it trained and the samples that trained each (the server's
per-module weights).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from client.data import SiteDataset
from client.label_skew import label_offsets
from client.ledger import LedgerEntry
from client.messages import EPSILON, NUM_EXAMPLES, module_weight_key
from client.privacy import BudgetExceeded, DPRound, PrivacyRefused, SitePrivacy, plan_round
from client.settings import TrainSettings, dp_refusals
from client.train import train_local
from fusion_models.model import MultimodalModel
from fusion_models.module_keys import module_of
from fusion_models.task import Task

__all__ = ["RoundResult", "train_round", "site_update", "round_seed"]


@dataclass(frozen=True)
class RoundResult:
    """What one site's round produced.

    Args:
        state: the modules the site trained (state-dict entries), on the CPU.
        counts: ``num-examples`` and ``num-examples.<module>``: the per-module weights.
        loss: mean training loss over the round's steps (nan when the site had no rows).
        steps: optimisation steps made.
        samples: sample passes made.
        epsilon: under DP, the site's epsilon after the round over its whole ledger.
    """

    state: dict[str, torch.Tensor]
    counts: dict[str, int]
    loss: float
    steps: int
    samples: int
    epsilon: float | None = None

    def metrics(self) -> dict[str, float]:
        """The reply's MetricRecord content: the weights plus ``train-loss/steps/samples``;
        under DP ``train-epsilon`` instead of the training loss, which DP does not cover."""
        if self.epsilon is not None:
            return {**self.counts, EPSILON: self.epsilon, "train-steps": self.steps, "train-samples": self.samples}
        return {**self.counts, "train-loss": self.loss, "train-steps": self.steps, "train-samples": self.samples}


def train_round(
    model: MultimodalModel,
    dataset: SiteDataset,
    task: Task,
    settings: TrainSettings,
    *,
    seed: int,
    device: torch.device,
    anchor: list[torch.Tensor] | None = None,
    keep: frozenset[str] = frozenset(),
    privacy: SitePrivacy | None = None,
    after_pass: Callable[[int], None] | None = None,
) -> RoundResult:
    """Train ``model`` in place for one round on ``dataset``; returns what the site sends.

    The label-skew offset comes from ``dataset``'s own labels (a site knows its own counts).
    ``anchor`` is the proximal term's reference (default: the weights at the start), and
    modules in ``keep`` (FedPer) are trained but never sent, nor their counts.
    With ``privacy`` (DP on) every trainable parameter is trained with DP-SGD, the release
    is appended to the site's ledger before this returns, and a round that would pass the
    site's budget raises :class:`client.privacy.BudgetExceeded` instead of training.
    ``after_pass`` goes to :func:`client.train.train_local` (model selection).
    """
    if privacy is not None and privacy.settings.enabled:
        return _private_round(model, dataset, task, settings, seed=seed, device=device, anchor=anchor, keep=keep,
                              privacy=privacy, after_pass=after_pass)  # fmt: skip
    offset = label_offsets(settings.label_skew, task, dataset.target)
    result = train_local(model, dataset, task, settings, seed=seed, device=device, label_offset=offset, anchor=anchor,
                         after_pass=after_pass)  # fmt: skip
    return _result(model, dataset, keep, result)


def _private_round(model: MultimodalModel, dataset: SiteDataset, task: Task, settings: TrainSettings, *, seed: int,
                   device: torch.device, anchor: list[torch.Tensor] | None, keep: frozenset[str],
                   privacy: SitePrivacy, after_pass: Callable[[int], None] | None = None) -> RoundResult:  # fmt: skip
    problems = dp_refusals(task=task.name, train=settings)
    if problems:
        raise PrivacyRefused("privacy=dp: " + "; ".join(problems))
    ledger = privacy.ledger
    with ledger.lock():
        if len(dataset) == 0:  # nothing trains, nothing about a record leaves
            result = train_local(model, dataset, task, settings, seed=seed, device=device)
            spent = ledger.entries[-1].epsilon if ledger.entries else 0.0
            return _result(model, dataset, keep, result, epsilon=spent)
        plan = plan_round(privacy.settings, n=len(dataset), train=settings, rounds=privacy.rounds,
                          extra_epochs=privacy.extra_epochs, round_epochs=privacy.round_epochs)  # fmt: skip
        spent = ledger.epsilon(accountant=plan.accountant, delta=plan.delta)
        after = ledger.epsilon(accountant=plan.accountant, delta=plan.delta, extra=plan.history())
        if after > privacy.limit:
            raise BudgetExceeded(site=ledger.site, spent=spent, after=after, budget=privacy.limit, delta=plan.delta)
        dp = DPRound(plan, ledger.history())
        result = train_local(model, dataset, task, settings, seed=seed, device=device, anchor=anchor, dp=dp,
                             after_pass=after_pass)  # fmt: skip
        steps, _ = dp.spent()
        epsilon = dp.epsilon()
        ledger.append(LedgerEntry(run_id=privacy.run_id, round=privacy.server_round, release=privacy.release,
                                  site=ledger.site, steps=steps,
                                  sample_rate=plan.sample_rate, noise_multiplier=plan.noise_multiplier,
                                  max_grad_norm=plan.max_grad_norm, delta=plan.delta, accountant=plan.accountant,
                                  epsilon=epsilon, grad_sample_mode=dp.grad_sample_mode,
                                  recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))  # fmt: skip
    return _result(model, dataset, keep, result, epsilon=epsilon)


def _result(model: MultimodalModel, dataset: SiteDataset, keep: frozenset[str], result: dict[str, float], *,
            epsilon: float | None = None) -> RoundResult:  # fmt: skip
    state, counts = site_update(model, dataset)
    state = {k: v for k, v in state.items() if module_of(k) not in keep}
    counts = {k: n for k, n in counts.items() if k.removeprefix(f"{NUM_EXAMPLES}.") not in keep}
    return RoundResult(state=state, counts=counts, loss=float(result["loss"]), steps=int(result["steps"]),
                       samples=int(result["samples"]), epsilon=epsilon)  # fmt: skip


def site_update(model: MultimodalModel, dataset: SiteDataset) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """State of the modules this site trained, and the per-module sample counts.

    A site sends an encoder only when some of its samples carry that modality and the head
    uses it; the fusion head always.
    """
    counts = dataset.presence_counts()
    used = model.used_modalities
    trained = {f"encoders.{m}" for m, n in counts.items() if n > 0 and m in used} | {"fusion"}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if module_of(k) in trained}
    metrics = {NUM_EXAMPLES: len(dataset), module_weight_key("fusion"): len(dataset)}
    metrics.update({module_weight_key(f"encoders.{m}"): n for m, n in counts.items()})
    return state, metrics


def round_seed(base: int, server_round: int, site: str) -> int:
    """The seed of one site's local training in one round, stable across processes."""
    digest = hashlib.sha256(f"{base}|{server_round}|{site}".encode()).hexdigest()
    return int(digest[:8], 16)
