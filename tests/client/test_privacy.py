"""DP-SGD at a site: composition over rounds, clipping, the budget rule, refusals, utility."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from client.data import SiteDataset
from client.ledger import PrivacyLedger
from client.privacy import BudgetExceeded, DPPlan, DPRound, PrivacyRefused, SitePrivacy, default_delta, plan_round
from client.round import train_round
from client.settings import PersonalizationSettings, PrivacySettings, TrainSettings, dp_refusals
from client.train import evaluate, make_loader
from fusion_models.model import ModelSpec, build_model
from fusion_models.task import make_task

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _dataset(n: int, *, seed: int = 0, noise: float = 0.5) -> SiteDataset:
    """A tabular site whose label is the sign of a noisy linear score."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = ((x[:, 0] - x[:, 1]) + noise * torch.randn(n, generator=g) > 0).float()
    return SiteDataset(inputs={"tabular": x}, present=torch.ones(n, 1, dtype=torch.bool), target=y,
                       sample_ids=[f"r{i}" for i in range(n)], modalities=["tabular"])  # fmt: skip


def _model(seed: int = 0):
    spec = ModelSpec(modalities={"tabular": {"in_features": 6}}, encoders={"tabular": {"name": "mlp", "hidden": 16}},
                     fusion={"name": "concat"}, feature_dim=8, out_dim=1)  # fmt: skip
    return build_model(spec, seed=seed)


def _privacy(ledger_dir, settings: PrivacySettings, *, site="a", run_id="1", server_round=1, rounds=3) -> SitePrivacy:
    return SitePrivacy(settings=settings, ledger=PrivacyLedger.open(ledger_dir, site), run_id=run_id,
                       server_round=server_round, rounds=rounds)  # fmt: skip


TRAIN = TrainSettings(epochs=1.0, batch_size=16, lr=1e-2, weight_decay=0.0)


@pytest.mark.parametrize("accountant, cls", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_after_r_rounds_is_the_accountants_for_the_whole_history(tmp_path, accountant, cls):
    dataset, model = _dataset(64), _model()
    settings = PrivacySettings(name="dp", noise_multiplier=1.1, budget=100.0, accountant=accountant)
    reported = []
    for r in range(1, 4):
        result = train_round(model, dataset, make_task("binary"), TRAIN, seed=r, device=CPU,
                             privacy=_privacy(tmp_path, settings, server_round=r))  # fmt: skip
        reported.append(result.epsilon)
    # Independently: the same mechanism stepped one step at a time, 3 rounds x 4 steps.
    q, delta = 1 / math.ceil(64 / 16), default_delta(64)
    reference = cls()
    for _ in range(3 * 4):
        reference.step(noise_multiplier=1.1, sample_rate=q)
    assert reported[-1] == pytest.approx(reference.get_epsilon(delta=delta), rel=1e-9)
    one_round = cls()
    for _ in range(4):
        one_round.step(noise_multiplier=1.1, sample_rate=q)
    assert reported[0] == pytest.approx(one_round.get_epsilon(delta=delta), rel=1e-9)
    assert reported[0] < reported[1] < reported[2], "composition, not a per-round reset"
    entries = PrivacyLedger.open(tmp_path, "a").entries
    assert [e.round for e in entries] == [1, 2, 3] and all(e.steps == 4 and e.sample_rate == q for e in entries)
    assert "train-epsilon" in result.metrics() and "train-loss" not in result.metrics()


def test_target_epsilon_sizes_sigma_once_for_the_whole_plan_with_its_margin():
    settings = PrivacySettings(name="dp", target_epsilon=3.0, plan_margin=0.5)
    plan = plan_round(settings, n=100, train=TRAIN, rounds=4)
    assert plan.steps == 7 and plan.sample_rate == 1 / 7
    assert plan.planned_steps == math.ceil(4 * 1.5) * 7
    sigma = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-3, sample_rate=1 / 7, steps=42, accountant="rdp",
                                 epsilon_tolerance=0.01)  # fmt: skip
    assert plan.noise_multiplier == pytest.approx(sigma) and plan.delta == pytest.approx(1e-3)
    # Every round plans the same sigma: it is sized for the plan, not for what is left.
    assert plan_round(settings, n=100, train=TRAIN, rounds=4) == plan
    accountant = RDPAccountant()
    accountant.history = [(plan.noise_multiplier, plan.sample_rate, plan.planned_steps)]
    assert accountant.get_epsilon(delta=plan.delta) <= 3.0


def test_per_sample_gradients_are_clipped_to_max_grad_norm():
    torch.manual_seed(0)
    dataset, model = _dataset(64), _model()
    plan = replace(plan_round(PrivacySettings(name="dp", noise_multiplier=1.0, budget=10.0, max_grad_norm=0.05),
                              n=64, train=TRAIN, rounds=1), noise_multiplier=1e-12)  # fmt: skip
    dp = DPRound(plan, [])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward, optimizer, loader = dp.attach(model, optimizer, make_loader(dataset, batch_size=16, shuffle=True, seed=0))
    batch = next(iter(loader))
    task = make_task("binary")
    task.loss(forward(batch), batch["label"]).backward()
    optimizer.pre_step()  # Opacus clips the per-sample gradients and sums them into summed_grad
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([p.grad_sample.reshape(len(batch["label"]), -1) for p in params], dim=1)
    norms = flat.norm(dim=1)
    assert (norms > 0.05).all(), "the bound must bite for this test to mean anything"
    clipped = flat * (0.05 / (norms + 1e-6)).clamp(max=1.0)[:, None]
    assert torch.all(clipped.norm(dim=1) <= 0.05 + 1e-6)
    summed = torch.cat([p.summed_grad.reshape(-1) for p in params])
    torch.testing.assert_close(summed, clipped.sum(dim=0), rtol=1e-5, atol=1e-7)
    assert summed.norm() <= 0.05 * len(batch["label"]) + 1e-6
    dp.close()


def test_noise_is_added_with_std_sigma_times_c():
    torch.manual_seed(1)
    dataset, model = _dataset(64), _model()
    plan = plan_round(PrivacySettings(name="dp", noise_multiplier=2.0, budget=10.0, max_grad_norm=0.5), n=64,
                      train=TRAIN, rounds=1)  # fmt: skip
    dp = DPRound(plan, [])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward, optimizer, loader = dp.attach(model, optimizer, make_loader(dataset, batch_size=16, shuffle=True, seed=0))
    batch = next(iter(loader))
    make_task("binary").loss(forward(batch), batch["label"]).backward()
    optimizer.pre_step()
    params = [p for p in model.parameters() if p.requires_grad]
    # p.grad = (summed_grad + noise) / expected batch size
    expected = optimizer.expected_batch_size
    noise = torch.cat([(p.grad * expected - p.summed_grad).reshape(-1) for p in params])
    assert noise.std().item() == pytest.approx(2.0 * 0.5, rel=0.1)
    dp.close()


def test_a_round_past_the_budget_is_refused_and_nothing_is_recorded(tmp_path):
    dataset, model = _dataset(64), _model()
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=4.0)
    trained = 0
    with pytest.raises(BudgetExceeded, match="privacy budget reached") as refusal:
        for r in range(1, 20):
            train_round(model, dataset, make_task("binary"), TRAIN, seed=r, device=CPU,
                        privacy=_privacy(tmp_path, settings, server_round=r))  # fmt: skip
            trained += 1
    entries = PrivacyLedger.open(tmp_path, "a").entries
    assert len(entries) == trained >= 1
    assert entries[-1].epsilon <= 4.0 < refusal.value.after
    assert refusal.value.spent == pytest.approx(entries[-1].epsilon)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(BudgetExceeded):
        train_round(model, dataset, make_task("binary"), TRAIN, seed=99, device=CPU,
                    privacy=_privacy(tmp_path, settings, run_id="2", server_round=1))  # a new run: no reset  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a refused round trains nothing"


def test_a_site_cap_is_stricter_than_the_runs_budget(tmp_path):
    privacy = replace(_privacy(tmp_path, PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0)), budget_cap=0.1)
    with pytest.raises(BudgetExceeded, match="budget 0.1"):
        train_round(_model(), _dataset(64), make_task("binary"), TRAIN, seed=0, device=CPU, privacy=privacy)


def test_survival_and_ditto_are_refused_with_the_reason():
    problems = dp_refusals(task="survival", train=TRAIN, personalization=PersonalizationSettings(name="ditto"))
    assert len(problems) == 2 and "risk set" in problems[0] and "twice" in problems[1]
    assert dp_refusals(task="binary", train=replace(TRAIN, label_skew="logit_adjust"),
                       personalization=PersonalizationSettings(name="finetune")) == []  # fmt: skip
    survival = SiteDataset(inputs={"tabular": torch.randn(8, 6)}, present=torch.ones(8, 1, dtype=torch.bool),
                           target=torch.rand(8, 2), sample_ids=[str(i) for i in range(8)], modalities=["tabular"])  # fmt: skip
    with pytest.raises(PrivacyRefused, match="Cox partial likelihood"):
        train_round(_model(), survival, make_task("survival"), TRAIN, seed=0, device=CPU,
                    privacy=SitePrivacy(settings=PrivacySettings(name="dp", target_epsilon=1.0), ledger=None,
                                        run_id="1", server_round=1, rounds=1))  # fmt: skip


def test_settings_errors_name_the_key_and_the_fix():
    with pytest.raises(ValueError, match="exactly one of privacy.target_epsilon"):
        PrivacySettings(name="dp", target_epsilon=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="needs privacy.budget"):
        PrivacySettings(name="dp", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="finite number"):
        PrivacySettings(name="dp", target_epsilon=float("inf"))
    with pytest.raises(ValueError, match="accountant: unknown 'gdp'"):
        PrivacySettings(name="dp", target_epsilon=1.0, accountant="gdp")
    with pytest.raises(ValueError, match="expected one of \\['none', 'dp'\\]"):
        PrivacySettings(name="central")


def test_the_proximal_pull_is_added_after_the_noise(tmp_path):
    """FedProx under DP: with a huge mu the weights stay near the anchor (the pull was applied)."""
    dataset, start = _dataset(64), _model()
    drift = {}
    for mu in (0.0, 50.0):
        model = _model()
        settings = replace(TRAIN, proximal_mu=mu, lr=0.05, epochs=2)
        train_round(model, dataset, make_task("binary"), settings, seed=0, device=CPU,
                    privacy=_privacy(tmp_path / str(mu), PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0)))
        drift[mu] = sum(float(((p - q) ** 2).sum()) for p, q in zip(model.parameters(), start.parameters()))
    assert drift[50.0] < 0.5 * drift[0.0]


def _image_model(fusion: str = "concat"):
    spec = ModelSpec(modalities={"image": {"in_channels": 3, "spatial_dims": 2}, "tabular": {"in_features": 6}},
                     encoders={"image": {"name": "cnn_small", "channels": [8, 8]}, "tabular": {"name": "mlp", "hidden": 16,
                                                                                         "dropout": 0.0}},
                     fusion={"name": fusion, **({"dropout": 0.0} if fusion == "concat" else {})}, feature_dim=8,
                     out_dim=1)  # fmt: skip
    return build_model(spec, seed=0)


def _image_dataset(n: int) -> SiteDataset:
    g = torch.Generator().manual_seed(0)
    tabular = _dataset(n)
    return SiteDataset(inputs={"image": torch.randn(n, 3, 12, 12, generator=g), "tabular": tabular.inputs["tabular"]},
                       present=torch.ones(n, 2, dtype=torch.bool), target=tabular.target,
                       sample_ids=tabular.sample_ids, modalities=["image", "tabular"])  # fmt: skip


def _clipped_mean_gradient(mode: str, clip: float, dataset: SiteDataset) -> torch.Tensor:
    """The gradient DP-SGD steps with on one Poisson batch, without noise: the clipped sum over
    the expected batch size."""
    model, task = _image_model(), make_task("binary")
    plan = DPPlan(noise_multiplier=0.0, sample_rate=0.25, steps=1, max_grad_norm=clip, delta=1e-5, accountant="rdp",
                  grad_sample_mode=mode)  # fmt: skip
    dp = DPRound(plan, [])
    forward, optimizer, loader = dp.attach(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                           make_loader(dataset, batch_size=10, shuffle=True, seed=0))  # fmt: skip
    torch.manual_seed(0)  # the same Poisson batch in every mode
    batch = next(iter(loader))
    outputs = forward(batch)
    loss = dp.ghost_loss(task.per_sample_loss(outputs, batch["label"])) if dp.ghost else task.loss(outputs, batch["label"])
    loss.backward()
    optimizer.step()
    dp.close()
    assert dp.grad_sample_mode == mode
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the image input needs no grad; harmless
def test_ghost_clipping_steps_with_the_same_clipped_gradient_as_per_sample_gradients():
    dataset = _image_dataset(40)
    ghost, hooks = _clipped_mean_gradient("ghost", 0.05, dataset), _clipped_mean_gradient("hooks", 0.05, dataset)
    torch.testing.assert_close(ghost, hooks, rtol=1e-4, atol=1e-7)
    unclipped = _clipped_mean_gradient("hooks", 1e6, dataset)
    assert unclipped.norm() > 2 * hooks.norm(), "the bound must bite for this test to mean anything"


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_ghost_clipping_is_recorded_and_refused_on_a_head_with_an_auxiliary_loss(tmp_path):
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0, grad_sample_mode="ghost")
    result = train_round(_image_model(), _image_dataset(48), make_task("binary"), TRAIN, seed=0, device=CPU,
                         privacy=_privacy(tmp_path, settings))  # fmt: skip
    assert result.steps == 3 and result.epsilon > 0
    assert PrivacyLedger.open(tmp_path, "a").entries[-1].grad_sample_mode == "ghost"
    with pytest.raises(PrivacyRefused, match="grad_sample_mode=ghost: MMDynamicsFusion adds an auxiliary loss"):
        train_round(_image_model("mm_dynamics"), _image_dataset(48), make_task("binary"), TRAIN, seed=0, device=CPU,
                    privacy=_privacy(tmp_path / "mm", settings))  # fmt: skip
    assert not PrivacyLedger.open(tmp_path / "mm", "a").entries


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_every_grad_sample_mode_trains_and_is_recorded(tmp_path, mode):
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0, grad_sample_mode=mode)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    result = train_round(model, _dataset(48), make_task("binary"), TRAIN, seed=0, device=CPU,
                         privacy=_privacy(tmp_path, settings))  # fmt: skip
    assert result.steps == 3 and result.epsilon > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert PrivacyLedger.open(tmp_path, "a").entries[-1].grad_sample_mode == mode
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())


def test_auto_records_the_mode_it_chose_for_the_model(tmp_path):
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0, grad_sample_mode="auto")
    train_round(_model(), _dataset(48), make_task("binary"), TRAIN, seed=0, device=CPU,
                privacy=_privacy(tmp_path, settings))  # fmt: skip
    assert PrivacyLedger.open(tmp_path, "a").entries[-1].grad_sample_mode == "ew"  # checked right on this MLP


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_auto_takes_ghost_clipping_where_the_per_sample_gradients_pass_the_bound(tmp_path, monkeypatch):
    from client import grad_sample_choice

    monkeypatch.setattr(grad_sample_choice, "_CHOSEN", {})
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=50.0, grad_sample_mode="auto",
                               ghost_above_mib=0.01)  # about 10 kB: less than 16 rows' per-sample gradients  # fmt: skip
    model = _image_model()
    before = [p.detach().clone() for p in model.parameters()]
    result = train_round(model, _image_dataset(48), make_task("binary"), TRAIN, seed=0, device=CPU,
                         privacy=_privacy(tmp_path, settings))  # fmt: skip
    assert result.steps == 3 and result.epsilon > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert PrivacyLedger.open(tmp_path, "a").entries[-1].grad_sample_mode == "ghost"


def test_a_dp_run_at_epsilon_8_learns_clearly_above_chance(tmp_path):
    train_set, test_set = _dataset(600, seed=0, noise=0.3), _dataset(300, seed=1, noise=0.3)
    model = _model()
    settings = PrivacySettings(name="dp", target_epsilon=8.0, max_grad_norm=1.0)
    train = TrainSettings(epochs=1.0, batch_size=64, lr=2e-2, weight_decay=0.0)
    for r in range(1, 6):
        result = train_round(model, train_set, make_task("binary"), train, seed=r, device=CPU,
                             privacy=_privacy(tmp_path, settings, server_round=r, rounds=5))  # fmt: skip
    assert result.epsilon <= 8.0
    auroc = evaluate(model, test_set, make_task("binary"), device=CPU)["auroc"]
    assert auroc > 0.8, auroc
    assert np.isfinite(auroc)


def test_fine_tuning_under_dp_is_a_release_of_its_own_and_stops_at_the_budget(tmp_path):
    from client.personalization import personalize

    dataset = _dataset(64)
    settings = PrivacySettings(name="dp", noise_multiplier=1.0, budget=20.0)
    finetune = PersonalizationSettings(name="finetune", epochs=1.0, min_train_positives=0)
    privacy = replace(_privacy(tmp_path, settings, server_round=3), extra_epochs=1.0)
    model, steps, note = personalize(_model(), dataset, make_task("binary"), TRAIN, finetune, seed=0, device=CPU,
                                     privacy=privacy)  # fmt: skip
    assert steps == 4 and note == ""
    entry = PrivacyLedger.open(tmp_path, "a").entries[-1]
    assert (entry.release, entry.round, entry.steps) == ("finetune", 3, 4)
    tight = replace(privacy, budget_cap=entry.epsilon)  # nothing left: the global model is kept, and said so
    kept, steps, note = personalize(_model(), dataset, make_task("binary"), TRAIN, finetune, seed=0, device=CPU,
                                    privacy=tight)  # fmt: skip
    assert steps == 0 and "privacy budget reached" in note
    assert len(PrivacyLedger.open(tmp_path, "a").entries) == 1
