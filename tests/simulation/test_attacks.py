"""Membership inference: each attack's scores against a hand computation, the low-FPR figures
and when they cannot be resolved, overfit vs DP models, the settings and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from client.data import SiteDataset
from client.ledger import PrivacyLedger
from client.privacy import SitePrivacy
from client.round import train_round
from client.settings import PrivacySettings, TrainSettings
from fusion_models.model import ModelSpec, build_model
from fusion_models.task import make_task
from server.default_config import CONFIG_DIR
from simulation import attacks
from simulation.attack_results import AttackReport, attack_lines, membership_metrics, tpr_at_fpr
from simulation.attack_settings import AttackSettings, check_attack_task
from simulation.attacks import (
    ATTACKS,
    AttackScores,
    ShadowTraining,
    candidates,
    likelihood_ratio,
    lira_attack,
    loss_attack,
    run_attacks,
)

CPU = torch.device("cpu")
BINARY = make_task("binary")


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _site(n: int, *, features: int = 6, seed: int = 0, random_labels: bool = False) -> SiteDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (torch.rand(n, generator=g) < 0.5).float() if random_labels else (x[:, 0] - x[:, 1] > 0).float()
    return SiteDataset(inputs={"tabular": x}, present=torch.ones(n, 1, dtype=torch.bool), target=y,
                       sample_ids=[f"s{seed}-{i}" for i in range(n)], modalities=["tabular"])  # fmt: skip


def _spec(features: int = 6, hidden: int = 16) -> ModelSpec:
    return ModelSpec(modalities={"tabular": {"in_features": features}},
                     encoders={"tabular": {"name": "mlp", "hidden": hidden, "dropout": 0.0}},
                     fusion={"name": "concat", "dropout": 0.0}, feature_dim=8, out_dim=1)  # fmt: skip


def _training(spec: ModelSpec, *, epochs: float = 2.0, rounds: int = 1, privacy=None) -> ShadowTraining:
    train = TrainSettings(epochs=epochs, batch_size=16, lr=1e-2, weight_decay=0.0)
    return ShadowTraining(spec=spec, train=train, rounds=rounds, seed=3, privacy=privacy or PrivacySettings())


def _trained(spec: ModelSpec, dataset: SiteDataset, training: ShadowTraining, *, privacy=None):
    model = build_model(spec, seed=0)
    for r in range(1, training.rounds + 1):
        train_round(model, dataset, BINARY, training.train, seed=r, device=CPU, privacy=privacy)
    return model


def _raw_logits(model, dataset: SiteDataset) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model({"tabular": dataset.inputs["tabular"], "present": dataset.present})[:, 0].double().numpy()


def test_candidates_are_balanced_seeded_and_split_members_from_held_out_rows():
    train, val, test = _site(30, seed=1), _site(7, seed=2), _site(5, seed=3)
    chosen = candidates("north", train, [val, test], seed=0)
    assert chosen.is_member.sum() == (~chosen.is_member).sum() == 12  # 7 + 5 held out; 12 of 30 members
    ids = chosen.dataset.sample_ids
    held_out = {f"{k}/{i}" for k, d in ((1, val), (2, test)) for i in d.sample_ids}
    assert {ids[i] for i in np.flatnonzero(~chosen.is_member)} == held_out
    assert all(ids[i].startswith("0/") for i in np.flatnonzero(chosen.is_member))
    again = candidates("north", train, [val, test], seed=0)
    assert np.array_equal(chosen.index, again.index)
    assert not np.array_equal(chosen.index, candidates("north", train, [val, test], seed=1).index)


def test_loss_attack_scores_are_minus_the_per_sample_loss_computed_by_hand():
    spec, train, held = _spec(), _site(40, seed=1), _site(40, seed=2)
    training = _training(spec)
    model = _trained(spec, train, training)
    chosen = candidates("a", train, [held], seed=0)
    out = loss_attack(model, chosen, task=BINARY, training=training, device=CPU)
    s, y = _raw_logits(model, chosen.dataset), chosen.dataset.target.double().numpy()
    p = 1 / (1 + np.exp(-s))
    by_hand = -(y * np.log(p) + (1 - y) * np.log(1 - p))  # binary cross-entropy of each row
    np.testing.assert_allclose(out.scores, -by_hand, rtol=1e-6, atol=1e-9)
    result = membership_metrics(out.scores, chosen.is_member, site="a")
    assert result.auc == pytest.approx(roc_auc_score(chosen.is_member, -by_hand))
    report = run_attacks(AttackSettings(name="loss"), model, {"train": {"a": train}, "val": {"a": held}}, BINARY,
                         training=training, device=CPU, model_name="test model")  # fmt: skip
    assert report.sites[0].auc == pytest.approx(result.auc) and report.pooled.auc == pytest.approx(result.auc)


def _gauss_logpdf(x, mu, sigma):
    return -0.5 * math.log(2 * math.pi * sigma**2) - (x - mu) ** 2 / (2 * sigma**2)


def test_likelihood_ratio_matches_a_hand_computation():
    shadow = np.array([[1.0, 4.0], [3.0, 2.0], [2.0, 7.0], [6.0, 1.0]])  # [K=4, N=2]
    keep = np.array([[True, False], [True, True], [False, False], [False, True]])
    target = np.array([2.5, 0.0])
    # IN: row 0 {1, 3} mean 2, row 1 {2, 1} mean 1.5; OUT: row 0 {2, 6} mean 4, row 1 {4, 7} mean 5.5
    s_in = math.sqrt(((1 - 2) ** 2 + (3 - 2) ** 2 + (2 - 1.5) ** 2 + (1 - 1.5) ** 2) / 2)
    s_out = math.sqrt(((2 - 4) ** 2 + (6 - 4) ** 2 + (4 - 5.5) ** 2 + (7 - 5.5) ** 2) / 2)
    online = [_gauss_logpdf(2.5, 2, s_in) - _gauss_logpdf(2.5, 4, s_out),
              _gauss_logpdf(0.0, 1.5, s_in) - _gauss_logpdf(0.0, 5.5, s_out)]  # fmt: skip
    np.testing.assert_allclose(likelihood_ratio(target, shadow, keep, online=True), online, rtol=1e-12)
    from scipy.stats import norm

    offline = [math.log(norm.cdf((2.5 - 4) / s_out)), math.log(norm.cdf((0.0 - 5.5) / s_out))]
    np.testing.assert_allclose(likelihood_ratio(target, shadow, keep, online=False), offline, rtol=1e-9)
    with pytest.raises(ValueError, match="OUT shadow"):
        likelihood_ratio(target, shadow, np.ones_like(keep), online=True)


def test_lira_trains_its_shadows_through_train_round_on_balanced_halves(monkeypatch):
    spec, train, held = _spec(), _site(24, seed=1), _site(24, seed=2)
    training = _training(spec, epochs=2.0, rounds=2)
    model = _trained(spec, train, training)
    chosen = candidates("a", train, [held], seed=0)
    sizes = []

    def counting(model, dataset, *args, **kwargs):
        sizes.append(len(dataset))
        return train_round(model, dataset, *args, **kwargs)

    monkeypatch.setattr(attacks, "train_round", counting)
    out = lira_attack(model, chosen, task=BINARY, training=training, device=CPU, shadows=4)
    pool_keep = out.details["pool_keep"]
    assert pool_keep.shape == (4, 48) and (pool_keep.sum(axis=0) == 2).all()  # every row IN for K // 2 shadows
    assert sizes == [n for n in pool_keep.sum(axis=1) for _ in range(2)]  # each shadow: its half, the run's rounds
    s, y = _raw_logits(model, chosen.dataset), chosen.dataset.target.numpy()
    np.testing.assert_allclose(out.details["target"], np.where(y > 0.5, s, -s), rtol=1e-6)  # log(p/(1-p)), p true class
    np.testing.assert_allclose(out.scores, likelihood_ratio(out.details["target"], out.details["shadow"],
                                                            out.details["keep"], online=True))  # fmt: skip
    assert out.note.startswith("LiRA online")
    offline = lira_attack(model, chosen, task=BINARY, training=training, device=CPU, shadows=3)
    assert offline.note.startswith("LiRA offline")


def test_logit_confidence_of_a_multiclass_model_is_log_p_over_one_minus_p():
    class Fixed(torch.nn.Module):
        def forward(self, batch):
            return batch["tabular"]

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    dataset = SiteDataset(inputs={"tabular": logits}, present=torch.ones(2, 1, dtype=torch.bool),
                          target=torch.tensor([0, 1]), sample_ids=["a", "b"], modalities=["tabular"])  # fmt: skip
    p = torch.softmax(logits.double(), dim=1)[[0, 1], [0, 1]].numpy()
    got = attacks.logit_confidence(Fixed(), dataset, make_task("multiclass", num_classes=3), device=CPU)
    np.testing.assert_allclose(got, np.log(p / (1 - p)), rtol=1e-9)


def test_an_overfit_model_leaks_and_a_dp_model_much_less(tmp_path):
    # Random labels: only memorisation lowers a member's loss.
    spec = _spec(features=20, hidden=64)
    train = _site(200, features=20, seed=1, random_labels=True)
    held = _site(200, features=20, seed=2, random_labels=True)
    training = _training(spec, epochs=40.0)
    data = {"train": {"a": train}, "test": {"a": held}}
    overfit = _trained(spec, train, training)
    plain = run_attacks(AttackSettings(name="loss"), overfit, data, BINARY, training=training, device=CPU,
                        model_name="overfit")  # fmt: skip
    dp_settings = PrivacySettings(name="dp", target_epsilon=1.0)
    privacy = SitePrivacy(settings=dp_settings, ledger=PrivacyLedger.open(tmp_path, "a"), run_id="t", server_round=1,
                          rounds=1)  # fmt: skip
    private = _trained(spec, train, training, privacy=privacy)
    assert PrivacyLedger.open(tmp_path, "a").entries[-1].epsilon <= 1.0 + 1e-6
    dp = run_attacks(AttackSettings(name="loss"), private, data, BINARY, training=training, device=CPU, model_name="dp")
    lira = run_attacks(AttackSettings(name="lira", options={"shadows": 4}), overfit, data, BINARY, training=training,
                       device=CPU, model_name="overfit")  # fmt: skip
    assert plain.pooled.auc > 0.8, plain.pooled  # measured 0.863
    assert lira.pooled.auc > 0.75, lira.pooled  # measured 0.848
    assert dp.pooled.auc < 0.62 and dp.pooled.auc < plain.pooled.auc - 0.2, (dp.pooled, plain.pooled)  # 0.553


def _hand_tpr(members: np.ndarray, non: np.ndarray, fpr: float) -> float:
    """The best threshold lets k = floor(fpr * n) non-members through: just above the (k+1)-th highest."""
    k = math.floor(fpr * len(non) + 1e-9)
    return float((members > np.sort(non)[::-1][k]).mean())


def test_tpr_at_low_fpr_is_the_hand_figure_or_none_with_a_reason():
    rng = np.random.default_rng(0)
    members, non = rng.normal(1.0, 1.0, 1500), rng.normal(0.0, 1.0, 1500)
    scores, is_member = np.concatenate([members, non]), np.r_[np.ones(1500, bool), np.zeros(1500, bool)]
    full = membership_metrics(scores, is_member, site="a")
    assert full.tpr_at_1pct_fpr == pytest.approx(_hand_tpr(members, non, 0.01))
    assert full.tpr_at_0_1pct_fpr == pytest.approx(_hand_tpr(members, non, 0.001))
    assert full.unresolved == {}
    few = membership_metrics(np.concatenate([members[:400], non[:400]]), np.r_[np.ones(400, bool), np.zeros(400, bool)],
                             site="a")  # fmt: skip
    assert few.tpr_at_0_1pct_fpr is None
    assert "400 non-members" in few.unresolved["tpr_at_0_1pct_fpr"] and ">= 1000" in few.unresolved["tpr_at_0_1pct_fpr"]
    assert few.tpr_at_1pct_fpr == pytest.approx(_hand_tpr(members[:400], non[:400], 0.01))
    assert tpr_at_fpr(scores[:1550], is_member[:1550], 0.01)[0] is None  # 50 non-members < 100


def test_attacks_json_round_trips_and_the_report_says_why_a_figure_is_none():
    is_member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    result = membership_metrics(np.r_[np.arange(50.0), np.arange(50.0) - 10], is_member, site="a")
    report = AttackReport(attack="loss", options={}, model="global model", note="n", sites=[result], pooled=result)
    data = report.to_dict()
    assert AttackReport.from_dict(data) == report
    lines = "\n".join(attack_lines(data))
    assert "TPR at 0.1% FPR is None, not resolvable: 50 non-members" in lines and "simulation only" in lines.lower()
    with pytest.raises(ValueError, match="schema version"):
        AttackReport.from_dict({**data, "schema_version": 99})
    with pytest.raises(ValueError, match="missing keys"):
        AttackReport.from_dict({k: v for k, v in data.items() if k != "sites"})


def test_every_attack_has_its_yaml_and_every_yaml_parses_into_settings():
    folder = CONFIG_DIR / "attack"
    assert {p.stem for p in folder.glob("*.yaml")} == set(ATTACKS.names()) | {"none"}
    for path in folder.glob("*.yaml"):
        settings = AttackSettings.from_config(OmegaConf.to_container(OmegaConf.load(path)))
        assert settings.name == path.stem


@pytest.mark.parametrize("section, message", [
    ({"name": "lossy"}, "Did you mean 'loss'"),
    ({"name": "loss", "shadows": 4}, "attack.shadows: attack=loss has no such option"),
    ({"name": "lira", "shadows": 2}, "attack.shadows must be an integer >= 3, got 2"),
    ({"name": "lira", "mode": "sideways"}, "attack.mode must be auto, online or offline"),
    ({"name": "lira", "shadows": 3, "mode": "online"}, "attack.mode=online needs attack.shadows >= 4"),
])  # fmt: skip
def test_bad_attack_settings_name_the_key_and_the_fix(section, message):
    with pytest.raises(ValueError, match=message):
        AttackSettings.from_config(section)


def test_survival_is_refused_before_anything_trains():
    with pytest.raises(ValueError, match="attack=loss: task survival has no per-sample loss.*set attack=none"):
        check_attack_task(AttackSettings(name="loss"), "survival")
    check_attack_task(AttackSettings(), "survival")  # no attack, nothing to refuse


def test_a_registered_attack_runs_by_name_and_duplicates_are_refused():
    @ATTACKS.register("test-label")
    def label_attack(model, candidates, *, task, training, device) -> AttackScores:
        return AttackScores(scores=candidates.is_member.astype(float), note="knows the answer")

    try:
        with pytest.raises(ValueError, match="already registered"):
            ATTACKS.register("test-label")(label_attack)
        spec = _spec()
        report = run_attacks(AttackSettings.from_config({"name": "test-label"}), build_model(spec), {
            "train": {"a": _site(10, seed=1)}, "val": {"a": _site(10, seed=2)}}, BINARY, training=_training(spec),
            device=CPU, model_name="m")  # fmt: skip
        assert report.pooled.auc == 1.0 and report.note == "knows the answer"
    finally:
        ATTACKS.unregister("test-label")


def _composed(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from simulation.config import SimulationConfig

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return SimulationConfig.from_cfg(compose(config_name="config", overrides=overrides), overrides=overrides)


def test_the_attack_group_reaches_the_simulation_config_and_bad_values_name_their_key():
    assert _composed([]).attack == AttackSettings()  # attack=none by default
    assert _composed(["attack=lira", "attack.shadows=6"]).attack == AttackSettings(name="lira", options={"shadows": 6,
                                                                                                          "mode": "auto"})
    with pytest.raises(ValueError, match="attack.shadows must be an integer >= 3, got 2"):
        _composed(["attack=lira", "attack.shadows=2"])
