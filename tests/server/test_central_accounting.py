"""The server's client-level epsilon: Opacus' RDP accountant stepped once per round with
(sigma, q), the record written atomically after each round."""

import json

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from server.central_accounting import CentralAccountant
from server.strategies import ModalityAwareFedAvg
from server.strategies.central_dp import CentralDPStrategy, update_noise_multiplier
from tests.server.strategies.conftest import GLOBAL, TABULAR, f32, reply, run_round


def _released(r):
    return {"round": r, "sampled": 4, "aggregated": 4, "clipped": 1, "clipping_norm": 1.0, "noise_std": 0.25,
            "next_clipping_norm": 1.0}  # fmt: skip


@pytest.mark.parametrize("sigma, q, rounds", [(1.0, 1.0, 5), (0.8, 0.25, 20), (2.5, 0.5, 12)])
def test_epsilon_after_r_rounds_equals_opacus_rdp_stepped_independently(tmp_path, sigma, q, rounds):
    accountant = CentralAccountant(noise_multiplier=sigma, sample_rate=q, delta=1e-5, path=tmp_path / "c.json")
    reference = RDPAccountant()
    epsilons = []
    for r in range(1, rounds + 1):
        record = accountant.step(**_released(r))
        reference.step(noise_multiplier=sigma, sample_rate=q)
        if r in (1, rounds // 2, rounds):  # the subsampled RDP bound costs ~0.1 s an evaluation
            assert record.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
        epsilons.append(record.epsilon)
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1], "composition, not a per-round reset"
    written = json.loads((tmp_path / "c.json").read_text())
    assert [row["round"] for row in written["rounds"]] == list(range(1, rounds + 1))
    assert written["epsilon"] == pytest.approx(epsilons[-1])
    assert written["history"] == [[sigma, q, rounds]]


def test_no_noise_is_an_infinite_epsilon_written_as_null(tmp_path):
    accountant = CentralAccountant(noise_multiplier=0.0, sample_rate=1.0, delta=1e-5, path=tmp_path / "c.json")
    assert accountant.epsilon() == 0.0
    assert accountant.step(**_released(1)).epsilon is None
    assert json.loads((tmp_path / "c.json").read_text())["epsilon"] is None


def test_adaptive_clipping_accounts_the_effective_sigma_and_noises_the_update_more(tmp_path, task_identity):
    sigma, sigma_b, n = 1.0, 1.5, 4
    strategy = CentralDPStrategy(ModalityAwareFedAvg(min_train_nodes=2, min_available_nodes=2), noise_multiplier=sigma,
                                 clipping_norm=0.5, expected_sites=n, delta=1e-5, clipping="adaptive",
                                 clipped_count_stddev=sigma_b, privacy_file=tmp_path / "c.json",
                                 rng=np.random.default_rng(0))  # fmt: skip
    z_update = (sigma**-2 - (2 * sigma_b) ** -2) ** -0.5
    assert strategy.update_noise_multiplier == pytest.approx(z_update)
    assert strategy.update_noise_multiplier == update_noise_multiplier(sigma, count_stddev=sigma_b, expected_sites=n)
    reference = RDPAccountant()
    for r in (1, 2, 3):
        run_round(strategy, GLOBAL, [reply(s, {TABULAR: GLOBAL[TABULAR] + f32(3, 0)}, {"num-examples": 5})
                                     for s in ("a", "b")], server_round=r)  # fmt: skip
        reference.step(noise_multiplier=sigma, sample_rate=1.0)
    rounds = strategy.accountant.rounds
    assert rounds[-1].epsilon == pytest.approx(reference.get_epsilon(delta=1e-5))
    assert rounds[0].noise_std == pytest.approx(z_update * 0.5 / n)
    # each round's noise uses that round's C, and the next round clips at the C it moved to
    assert rounds[1].clipping_norm == rounds[0].next_clipping_norm != rounds[0].clipping_norm
    assert rounds[1].noise_std == pytest.approx(z_update * rounds[1].clipping_norm / n)
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["settings"]["clipping"] == "adaptive"
    assert written["settings"]["update_noise_multiplier"] == pytest.approx(z_update)


@pytest.mark.parametrize("target, q, rounds", [(3.0, 1.0, 5), (8.0, 0.5, 20)])
def test_a_target_epsilon_sizes_the_noise_so_the_planned_run_ends_just_within_it(tmp_path, target, q, rounds):
    from server.settings import CentralDPSettings, StrategySettings
    from server.strategies import build_strategy

    dp = CentralDPSettings(name="central_dp", noise_multiplier=99.0, target_epsilon=target)
    strategy = build_strategy(StrategySettings(name="fedavg", fraction_train=q), on_site_metrics=None, num_nodes=4,
                              central_privacy=dp, central_privacy_file=tmp_path / "c.json", rounds=rounds)  # fmt: skip
    assert strategy.noise_multiplier != 99.0  # the given z is replaced
    reference = RDPAccountant()
    for _ in range(rounds):
        reference.step(noise_multiplier=strategy.noise_multiplier, sample_rate=q)
    assert target * 0.99 <= reference.get_epsilon(delta=dp.delta) <= target
    lower = RDPAccountant()  # a clearly smaller z would overspend: z is (near) the smallest that fits
    for _ in range(rounds):
        lower.step(noise_multiplier=strategy.noise_multiplier * 0.97, sample_rate=q)
    assert lower.get_epsilon(delta=dp.delta) > target
    assert strategy.accountant.settings["target_epsilon"] == target


def test_a_target_epsilon_needs_the_planned_rounds_and_a_positive_value():
    from server.settings import CentralDPSettings, StrategySettings
    from server.strategies import build_strategy

    dp = CentralDPSettings(name="central_dp", target_epsilon=2.0)
    with pytest.raises(ValueError, match="pass rounds"):
        build_strategy(StrategySettings(name="fedavg"), on_site_metrics=None, num_nodes=4, central_privacy=dp)
    with pytest.raises(ValueError, match=r"privacy.target_epsilon must be a number > 0, or null"):
        CentralDPSettings(name="central_dp", target_epsilon=0)
