"""Sample-level DP-SGD at a site with Opacus: the plan of a round, the budget rule, and the
wrapping of one round's model, optimiser and loader.

Every round of a DP site goes through :func:`client.round.train_round`, which

1. refuses what DP-SGD cannot cover (:func:`client.settings.dp_refusals`: survival's Cox loss, a loss that
   depends on the site's label counts, personal models trained without DP);
2. plans the round (:func:`plan_round`): Poisson sampling rate ``q = 1 / ceil(n / batch)``,
   the round's steps, and the noise multiplier, sized once for the whole planned run;
3. refuses the round when the ledger's epsilon with this round's steps would pass the
   site's budget (:class:`BudgetExceeded`);
4. trains through Opacus' ``PrivacyEngine`` (:class:`DPRound`): a ``ModuleValidator``-checked
   model, Poisson sampling, per-sample clipping to ``max_grad_norm`` over every trained
   parameter, Gaussian noise, the accountant's history rebuilt from the ledger;
5. appends the release to the site's ledger (:mod:`client.ledger`) before the reply leaves.

What the epsilon covers: the model weights the site sends after training (and the modules
FedPer keeps, which are trained with DP-SGD too, since they shape the sent ones), for one
record of the site's training split added or removed. It does not cover the feature
statistics the site sends before round 1, the exact sample counts of every reply, or figures
computed on the validation and test splits, whose rows DP-SGD never touches.

References:
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016. https://arxiv.org/abs/1607.00133
    Mironov, "Renyi Differential Privacy", CSF 2017. https://arxiv.org/abs/1702.07476
    Gopi et al., "Numerical Composition of Differential Privacy" (PRV), NeurIPS 2021. https://arxiv.org/abs/2106.02848
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from client.grad_sample_choice import AUTO, check_rows, choose_grad_sample_mode, ghost_refusal
from client.ledger import History, PrivacyLedger, merged_history
from client.settings import PrivacySettings, TrainSettings

__all__ = [
    "DPPlan",
    "DPRound",
    "BudgetExceeded",
    "PrivacyRefused",
    "SitePrivacy",
    "TensorArguments",
    "default_delta",
    "ledger_root",
    "plan_round",
    "round_steps",
]

LEDGER_SUBDIR = "privacy"
GHOST = "ghost"


class PrivacyRefused(ValueError):
    """DP-SGD was asked for something it cannot make private; the message says why."""


class BudgetExceeded(RuntimeError):
    """The site's next round would take it past its lifetime budget: it refuses the round.

    Args:
        site: the site.
        spent: its epsilon so far.
        after: its epsilon had it trained this round.
        budget: its limit.
        delta: the delta of all three.
    """

    def __init__(self, *, site: str, spent: float, after: float, budget: float, delta: float) -> None:
        self.site, self.spent, self.after, self.budget, self.delta = site, spent, after, budget, delta
        super().__init__(f"site {site}: privacy budget reached: epsilon {spent:.3f} spent, this round would make it "
                         f"{after:.3f} > privacy.budget {budget:g} (delta {delta:.3g}); the site trains no more rounds "
                         f"against this ledger")  # fmt: skip


def default_delta(n: int) -> float:
    """``1 / (10 n)``: below ``1 / n``, so that releasing one whole record is unlikely."""
    return 1.0 / (10.0 * max(int(n), 1))


def round_steps(n: int, train: TrainSettings) -> tuple[int, int]:
    """(batches per epoch, steps of one round) for ``n`` training rows, as :func:`client.train.train_local` counts them."""
    batches = max(1, math.ceil(n / train.batch_size))
    return batches, max(1, math.ceil(train.epochs * batches))


def ledger_root(settings: PrivacySettings, *, state_dir: str | None, run_dir: str | None) -> Path:
    """Where a site's ledger folder lies: a deployed node's ``state-dir`` (the server cannot
    move a site's ledger), else ``privacy.ledger_dir``, else ``<run-dir>/privacy``."""
    if state_dir:
        return Path(state_dir)
    if settings.ledger_dir:
        return Path(settings.ledger_dir)
    if run_dir:
        return Path(run_dir) / LEDGER_SUBDIR
    raise PrivacyRefused("privacy=dp: the site has no ledger folder: set privacy.ledger_dir, or node_config "
                         "'state-dir' on a deployed site")  # fmt: skip


@dataclass(frozen=True)
class DPPlan:
    """One round of DP-SGD at one site.

    Args:
        noise_multiplier: sigma of every step.
        sample_rate: Poisson sampling rate q.
        steps: DP-SGD steps of the round.
        max_grad_norm: clipping bound C.
        delta: the delta epsilon is stated at.
        accountant: ``rdp`` or ``prv``.
        grad_sample_mode: Opacus' per-sample-gradient mode.
        planned_steps: steps the noise was sized for (target-epsilon mode; 0 for a fixed sigma).
        ghost_above_mib: under ``auto``, per-sample gradients of an expected batch above this
            size choose ghost clipping (:func:`client.grad_sample_choice.choose_grad_sample_mode`).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: str
    grad_sample_mode: str
    planned_steps: int = 0
    ghost_above_mib: float = math.inf

    def history(self) -> History:
        return [(self.noise_multiplier, self.sample_rate, self.steps)]


def plan_round(settings: PrivacySettings, *, n: int, train: TrainSettings, rounds: int, extra_epochs: float = 0.0,
               round_epochs: float | None = None) -> DPPlan:  # fmt: skip
    """The plan of one release (``train``'s steps) for a site with ``n`` training rows.

    With ``target_epsilon`` sigma is sized once for ``ceil(rounds * (1 + plan_margin))``
    rounds of this round's steps (``rounds``: ``plan_rounds``, else the run's) plus
    ``extra_epochs`` passes (the final fine-tuning), so the whole planned run, and a margin
    of rounds run again, stays within the target (``round_epochs``: a round's epochs when
    ``train`` is the fine-tuning's, default ``train.epochs``). It is recomputed
    identically every round (same n, q, steps), never from what is left: Opacus'
    ``make_private_with_epsilon`` would size each round as if it were the only one.
    """
    if n < 1:
        raise PrivacyRefused("plan_round needs at least one training row")
    batches, steps = round_steps(n, train)
    q = 1.0 / batches
    delta = settings.delta if settings.delta is not None else default_delta(n)
    planned = 0
    if settings.noise_multiplier is not None:
        sigma = float(settings.noise_multiplier)
    else:
        per_round = round_steps(n, replace(train, epochs=round_epochs or train.epochs))[1]
        planned = math.ceil((settings.plan_rounds or rounds) * (1 + settings.plan_margin)) * per_round
        planned += math.ceil(extra_epochs * batches) if extra_epochs > 0 else 0
        from opacus.accountants.utils import get_noise_multiplier  # lazily: a run without DP skips Opacus

        sigma = float(get_noise_multiplier(target_epsilon=settings.target_epsilon, target_delta=delta, sample_rate=q,
                                           steps=planned, accountant=settings.accountant, epsilon_tolerance=0.01))  # fmt: skip
    return DPPlan(noise_multiplier=sigma, sample_rate=q, steps=steps, max_grad_norm=settings.max_grad_norm, delta=delta,
                  accountant=settings.accountant, grad_sample_mode=settings.grad_sample_mode, planned_steps=planned,
                  ghost_above_mib=settings.ghost_above_mib)  # fmt: skip


@dataclass
class SitePrivacy:
    """What a round needs to train privately at one site: settings, the ledger, and the round's identity.

    Args:
        settings: the run's privacy settings.
        ledger: the site's ledger.
        run_id: the run asking for the round.
        server_round: the round.
        rounds: the run's planned rounds (the noise is sized for them in target-epsilon mode).
        budget_cap: the site's own limit (a deployed node's ``privacy-budget``); the stricter
            of it and the run's applies.
        extra_epochs: passes planned after the rounds (``finetune``'s epochs), in the noise plan.
        round_epochs: a round's epochs, when this release is the fine-tuning (its own epochs differ).
        release: what this round releases: ``round`` or ``finetune``.
    """

    settings: PrivacySettings
    ledger: PrivacyLedger
    run_id: str
    server_round: int
    rounds: int
    budget_cap: float | None = None
    extra_epochs: float = 0.0
    round_epochs: float | None = None
    release: str = "round"

    @property
    def limit(self) -> float:
        return min(self.settings.limit, self.budget_cap if self.budget_cap is not None else math.inf)


class TensorArguments(nn.Module):
    """The model called with tensors: Opacus' ``ew`` wrapper takes the batch size from
    ``args[0].shape[0]``, which a dict does not have; the presence mask goes first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, present: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.model.modalities, inputs), present=present))


class _DictBatches:
    """The Poisson loader's batches, always dicts: Opacus' collate returns ``[]`` for an empty
    batch drawn before any non-empty one; this gives the dataset's own empty batch instead."""

    def __init__(self, loader: DataLoader, empty: dict[str, torch.Tensor]) -> None:
        self.loader, self.empty = loader, empty

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield batch if isinstance(batch, dict) else dict(self.empty)


class DPRound:
    """One round of DP-SGD through Opacus' ``PrivacyEngine``, its accountant resuming the
    site's history, so the epsilon it reports covers every release before this one.

    Args:
        plan: the round's plan.
        history: the ledger's accountant history before the round.
    """

    def __init__(self, plan: DPPlan, history: History) -> None:
        self.plan = plan
        #: the mode that ran: the plan's, or under ``auto`` the one chosen for the model at ``attach``
        self.grad_sample_mode = plan.grad_sample_mode
        self.before = merged_history(list(history))
        from opacus import PrivacyEngine  # lazily: a run without DP skips Opacus' import

        self.engine = PrivacyEngine(accountant=plan.accountant)
        self.engine.accountant.history = list(self.before)

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, *,
               anchor: list[torch.Tensor] | None = None, mu: float = 0.0):  # fmt: skip
        """Make ``model``, ``optimizer`` and ``loader`` private; returns (forward, optimizer, loader).

        ``forward(batch)`` maps a dict batch to outputs through the per-sample-gradient
        wrapper. With ``mu > 0`` the proximal gradient ``mu * (w - anchor)`` is added after
        the noise: it depends on no training row, so it is post-processing and costs no epsilon.
        """
        plan = self.plan
        mode = plan.grad_sample_mode
        if mode == AUTO:
            dataset, device = loader.dataset, next(model.parameters()).device
            rows = default_collate([dataset[i] for i in check_rows(dataset.present)])
            inputs = {k: rows[k].to(device) for k in [*model.modalities, "present"]}
            mode, _ = choose_grad_sample_mode(model, inputs, rows["label"].to(device),  # the choice is logged there
                                              batch_size=plan.sample_rate * len(dataset),
                                              ghost_above_bytes=plan.ghost_above_mib * 2**20)  # fmt: skip
        self.grad_sample_mode = mode
        if mode == GHOST:
            refusal = ghost_refusal(model)
            if refusal:
                raise PrivacyRefused(f"privacy.grad_sample_mode=ghost: {refusal}; use auto, hooks or ew")
        module = TensorArguments(model) if mode == "ew" else model
        made = self.engine.make_private(
            module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm, grad_sample_mode=mode, poisson_sampling=True,
        )  # fmt: skip
        # ghost also returns a criterion wrapper; the round uses the task's own per-row loss instead (ghost_loss)
        wrapped, optimizer, private_loader = (made[0], made[1], made[3]) if mode == GHOST else made
        self.optimizer = optimizer
        sampler_rate = private_loader.batch_sampler.sample_rate
        if not math.isclose(sampler_rate, plan.sample_rate, rel_tol=1e-12):
            raise RuntimeError(f"Poisson sampling rate {sampler_rate} differs from the plan's {plan.sample_rate}")
        # make_private tells the accountant 1 / len(new loader), which int(1 / q) can make a
        # step larger than the sampler's q (e.g. 1/92 for q = 1/93): account the q that samples.
        account = self.engine.accountant.get_optimizer_hook_fn(sample_rate=sampler_rate)
        trainable = [(p, a) for p, a in zip(model.parameters(), anchor or []) if p.requires_grad]

        def step_hook(opt) -> None:
            account(opt)
            for p, a in trainable if mu > 0 else ():
                p.grad.add_(p.detach() - a, alpha=mu)

        optimizer.attach_step_hook(step_hook)
        self.wrapped = wrapped
        empty = {k: v[:0] for k, v in default_collate([loader.dataset[0]]).items()}
        if mode == "ew":
            modalities = list(model.modalities)

            def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
                return wrapped(batch["present"], *(batch[m] for m in modalities))
        else:
            forward = wrapped
        return forward, optimizer, _DictBatches(private_loader, empty)

    @property
    def ghost(self) -> bool:
        """Whether the round clips by ghost norms: its loss must then come from :meth:`ghost_loss`."""
        return self.grad_sample_mode == GHOST

    def ghost_loss(self, per_row: torch.Tensor):
        """The batch's loss for ghost clipping: ``backward()`` runs Opacus' two passes (per-row
        gradient norms, then the clipped sum), so the loss must be each row's own, ``[B]``."""
        from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

        return DPTensorFastGradientClipping(self.wrapped, self.optimizer, per_row, "mean")

    def close(self) -> None:
        """Take Opacus' hooks and per-sample attributes off the model (a baseline trains the same model next round)."""
        if getattr(self, "wrapped", None) is not None:
            self.wrapped.cleanup()
            self.wrapped = None

    def spent(self) -> tuple[int, History]:
        """(steps this round, the accountant's whole history); checks that the accountant
        recorded exactly the plan's mechanism."""
        after = merged_history(list(self.engine.accountant.history))
        steps = sum(s for *_, s in after) - sum(s for *_, s in self.before)
        expected = merged_history([*self.before, (self.plan.noise_multiplier, self.plan.sample_rate, steps)])
        if after != expected:
            raise RuntimeError(f"the accountant's history {after} is not the ledger's {self.before} plus this round's "
                               f"steps at sigma {self.plan.noise_multiplier}, q {self.plan.sample_rate}")  # fmt: skip
        return steps, after

    def epsilon(self) -> float:
        """Opacus' epsilon at the plan's delta over the whole history, this round included."""
        return float(self.engine.get_epsilon(self.plan.delta))


ForwardFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]
